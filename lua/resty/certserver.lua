-- certserver: per-SNI certificates for nginx from the certserver sidecar.
--
-- Use from nginx (nginx/certserver-http.conf, nginx/certserver-ssl.conf):
--
--     init_by_lua_block {
--         require("resty.certserver").configure{
--             socket = "unix:/run/certserver/certs.sock",
--         }
--     }
--     ssl_certificate_by_lua_block {
--         require("resty.certserver").ssl_certificate()
--     }
--
-- No init_worker_by_lua is needed: a worker's first handshake starts its
-- change feed timer.
--
-- How a handshake finds its certificate, cheapest first:
--
--  1. A per-worker LRU cache (`lru_size` names) of the normalized SNI to
--     the parsed certificate chain and key (cdata) of the stored record
--     that serves it; a second one for unknown names and wildcard
--     subnames. A fresh hit costs no I/O, no lock and no parsing.
--  2. The lua_shared_dict `shared_dict`, shared by all workers: per name,
--     its freshness deadline and the id of the record serving it (a small
--     entry); per record, its leaf and key PEM and the digests of its
--     intermediates, with a version (an MD5), so that all names of a
--     record (its SANs, a wildcard's subnames) share one copy, and a
--     worker parses a record once per version; per intermediate, its PEM
--     by digest, once for all records. A worker parses each intermediate
--     once, and for a new record only its leaf (and its key, unless a
--     record before had the same key: parsed keys are kept by digest;
--     an ECDSA P-256 key is built from its scalar and point, see
--     p256_key), then adds its parsed intermediates to the leaf's chain.
--  3. The sidecar, `GET /v1/certs/{name}` over HTTP/1.1 on `socket`. At most
--     one request per name is in flight across all workers (a lock in
--     `lock_dict`); other handshakes for that name serve their stale copy
--     if they have one, else wait for the request to finish. The sidecar
--     names the record in X-Certserver-Record (without it, the name is its
--     own record). It is asked for its leaf format (Accept:
--     application/vnd.certserver.leaf+pem); an intermediate neither the
--     worker nor the shared dict holds is then asked for by digest,
--     `GET /v1/chains/{digest}`: once per nginx.
--
-- What the sidecar answers:
--
--  * 200: in the leaf format, the PEM leaf then the PEM private key, with
--    X-Certserver-Key (the key's digest) and X-Certserver-Chain (the
--    intermediates' digests, in chain order); from a sidecar without it,
--    the PEM chain (leaf first) then the key. Fresh for the
--    `Cache-Control: max-age=N` seconds (60 when the header is missing). The
--    shared copy is kept `max_stale` seconds longer, to be served while the
--    sidecar cannot be reached. A certificate whose intermediate cannot be
--    had (GET /v1/chains fails, or answers a certificate of another
--    digest) counts as a bad answer (below): never served with an
--    incomplete chain.
--  * 404: no certificate for the name. nginx's own ssl_certificate (the
--    fallback) is served and the answer is remembered for its max-age, at
--    most `negative_ttl` seconds. A 404 replaces a cached certificate for
--    the name.
--  * 400: the sidecar refuses the name; as 404, at most `invalid_ttl`.
--  * a timeout, another status or a malformed response: the cached
--    certificate is served even past its max-age (up to `max_stale`), else
--    the fallback, and the name is not asked about for `error_ttl` seconds.
--  * no connection, a connection closed with no answer, or SLOW_LIMIT
--    timeouts in a row (across workers, no answer between): the sidecar
--    is down (below).
--  A max-age is taken at most MAX_AGE (a day).
--
-- Changes (see poll_changes): every worker asks the sidecar once a second,
-- from a timer, for the names whose certificate was stored, replaced or
-- deleted since its last poll (GET /v1/changes), and drops them from the
-- shared dict and its LRU, with every name served through a dropped
-- record: a replaced or removed certificate is gone from every worker
-- within about a second. With `prewarm` (the default) a name the worker
-- serves a certificate for is not dropped but fetched and parsed again
-- in a timer, off the handshake path, its old certificate served until
-- the new answer is swapped in (see prewarm_one), at most `prewarm_wait`
-- seconds (its max-age held over meanwhile, never past its notAfter; see
-- hold_over). A wave of renewals is spread over tens of seconds at a
-- small share of the worker (see prewarm_rest): a renewal is not urgent.
-- A name the feed marks gone (no certificate serves it any more: a
-- deletion) is dropped at once and taken out of the queue. Any other
-- change waits in the same queue, among them a revocation (its
-- replacement is a renewal), a deletion whose names a wildcard still
-- covers, and a deletion the sidecar's lookups had no time for or an
-- older sidecar does not mark: during a wave, up to half of
-- `prewarm_wait` (a reload drops it at once, `prewarm = false` within
-- about a second).
-- The max-age stays the
-- safety net (a sidecar without the feed, a change made while nginx
-- could not hear of it). When
-- the sidecar cannot say what changed (nginx fell more than 8,192
-- changing writes or 4,096 names behind, or the store is another one)
-- everything cached is revalidated: asked again at its next handshake,
-- served meanwhile. The
-- feed's history is kept in the store, so a sidecar restart loses
-- nothing.
--
-- The sidecar down (see sidecar_down): the first request that cannot
-- connect, or gets its connection closed with no answer (or the third
-- timeout in a row), marks it down for all workers and logs
-- "certserver: sidecar at ... unreachable (...)" once. From then on no
-- request is sent (nginx itself logs every failed connect, at [error] or
-- [crit], whatever lua_socket_log_errors says), cached certificates are
-- served, stale if need be, and a name whose wildcard one label up is
-- cached gets the wildcard; others get the fallback. Each handshake that
-- would ask probes the socket silently instead, so the first handshake
-- after the sidecar returns ends the outage ("certserver: sidecar at ...
-- accepts connections again after N s", [warn]) and is served from it.
--
-- Floods: nothing a client causes by choosing SNIs evicts a certificate.
-- Negative answers and the name entries of a wildcard's subnames take only
-- free room in the shared dict (safe_set); a subname of a cached wildcard
-- adds no PEM. In each worker they have an LRU of their own (as large as
-- the one of the other names), so a flood of them leaves the parsed
-- certificates of the other names in place.
--
-- A handshake is never failed by this module when the fallback could serve
-- it: the configured certificate is replaced only once the new chain and key
-- have both been parsed and found to match. Other errors are logged at most
-- once per `log_interval` per kind and worker, with a count of those
-- suppressed.
--
-- Names are lowercased and a trailing dot is dropped; a name the sidecar
-- would refuse as no host name (anything but [a-z0-9.-], an empty label or
-- one over 63 bytes, a label starting or ending with a hyphen, "--" in the
-- third and fourth places but for "xn--", an all-digit last label as in an
-- IPv4 address, over 253 bytes) gets the fallback without asking.
--
-- Sizing: the shared dict holds, per stored record asked for, its leaf and
-- key PEM (about 2.3 KB with the entries of its names for ECDSA, more for
-- RSA), each intermediate once, and about 200 bytes per name asked for;
-- when it is full the least recently used go. A worker holds, per name in
-- its LRU, the parsed leaf (4.6 KB for ECDSA P-256 with OpenSSL 3.0), the
-- parsed key (2.2 KB, once per distinct key) and about 1 KB of Lua
-- tables, strings and cdata, which take about 2 KB of LuaJIT's memory
-- with what its garbage collector frees but keeps.


local ffi = require "ffi"
local ssl = require "ngx.ssl"
local lrucache = require "resty.lrucache"


local ngx = ngx
local ngx_log = ngx.log
local ngx_now = ngx.now
local ngx_sleep = ngx.sleep
local ngx_md5 = ngx.md5
local ngx_decode_base64 = ngx.decode_base64
local ngx_socket_tcp = ngx.socket.tcp
local ngx_timer_every = ngx.timer.every
local ngx_timer_at = ngx.timer.at
local ngx_get_phase = ngx.get_phase
local ngx_worker_pid = ngx.worker.pid
local ngx_worker_exiting = ngx.worker.exiting
local ngx_shared = ngx.shared
local ERR = ngx.ERR
local WARN = ngx.WARN
local C = ffi.C
local ffi_errno = ffi.errno
local ffi_new = ffi.new
local ffi_sizeof = ffi.sizeof
local ffi_copy = ffi.copy
local ffi_fill = ffi.fill
local ffi_gc = ffi.gc
local ssl_server_name = ssl.server_name
local ssl_clear_certs = ssl.clear_certs
local ssl_set_cert = ssl.set_cert
local ssl_set_priv_key = ssl.set_priv_key
local ssl_parse_pem_cert = ssl.parse_pem_cert
local ssl_parse_pem_priv_key = ssl.parse_pem_priv_key
local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_gmatch = string.gmatch
local str_gsub = string.gsub
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local table_concat = table.concat
local math_huge = math.huge
local math_max = math.max
local math_min = math.min
local math_floor = math.floor
local error = error
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type


local _M = { _VERSION = "0.3.0" }


local DOT = str_byte(".")
local HYPHEN = str_byte("-")
local DOWN_KEY = "!down"         -- "<next probe> <interval> <since>" while down
local FLAP_KEY = "!flap"         -- the last probe interval, for 2 minutes
local BACK_KEY = "!back"         -- set for 5 s when a probe ended an outage
local PROBE_KEY = "!probe"       -- in lock_dict: the worker probing
local FEED_KEY = "!feed"         -- "<epoch> <version>" last applied
local REVAL_KEY = "!reval"       -- what was fetched before this is stale
-- "!bad:" .. name, after a bad answer for name; set with safe_set, as any
-- entry a client can cause by the thousand: it never evicts a certificate
local BAD_PREFIX = "!bad:"
-- "!r2:" .. record id: "<version>\n<content>", the content being either
-- the PEM chain and key of the sidecar's first answer format, or, of its
-- leaf format, LEAF_MARK .. "<key digest>[ <intermediate digest>...]\n"
-- then the PEM leaf and key. ("!r:" held the first format only, in
-- version 0.2 of this module: a version that read a leaf record would
-- serve the leaf without its chain, so the two do not share entries
-- across a reload to an older module or from one.)
local RECORD_PREFIX = "!r2:"
local LEAF_MARK = "!2 "
local CHAIN_PREFIX = "!c:"       -- "!c:" .. digest: an intermediate's PEM
local WILD_PREFIX = "!w:"        -- "!w:" .. wildcard pattern: its record's id
local NEGATIVE = "-"             -- the record of a cached 404/400
local SLOW_LIMIT = 3             -- timeouts in a row that mark the sidecar down
local MAX_HEADERS = 64
local MAX_BODY = 1024 * 1024
local MAX_FEED_BODY = 2 * 1024 * 1024
local DEFAULT_MAX_AGE = 60
local MAX_AGE = 24 * 3600
local FEED_INTERVAL = 1          -- seconds between two polls of the feed
local PROBE_FLAP = 0.5           -- seconds between probes of a down sidecar
local PROBE_MAX = 30             -- after a false recovery, doubling up to this
-- Why a request to the sidecar failed: the third value of exchange and
-- fetch when they fail.
local CLOSED = "closed"          -- closed before anything was received: a
                                 -- pooled connection the sidecar had closed
local UNANSWERED = "unanswered"  -- no connection, or no answer started
local SLOW = "slow"              -- connected, but no answer within read_timeout
local BAD_ANSWER = "bad_answer"  -- a status line came; what followed was wrong
local KEY_PATTERN = "%-%-%-%-%-BEGIN [A-Z ]*PRIVATE KEY%-%-%-%-%-"


-- Options of configure and their defaults. Times without a unit suffix are
-- in seconds.
local defaults = {
    -- where the sidecar's certificate endpoint listens: "unix:/path" or an
    -- IP literal with a port ("127.0.0.1:9401", "[::1]:9401")
    socket = "unix:/run/certserver/certs.sock",
    connect_timeout_ms = 100,
    -- for sending the request and for each read of the response
    read_timeout_ms = 500,
    -- how long one worker may hold a name's fetch lock, and how long other
    -- handshakes wait for it; must exceed connect_timeout_ms +
    -- read_timeout_ms
    lock_timeout_ms = 1000,
    shared_dict = "certserver_certs",
    lock_dict = "certserver_locks",
    -- names kept per worker with their parsed certificate, and as many
    -- unknown names and wildcard subnames: 50,000 hot names stay parsed.
    -- A cached name costs a worker about 9.1 KB (ECDSA P-256 with OpenSSL
    -- 3.0: the parsed leaf 4.6 KB, its key 2.2 KB unless another name
    -- has the same key, this module's Lua objects 1 KB, about 2 KB of
    -- LuaJIT's memory with its garbage collector's slack), only once it
    -- is asked for
    lru_size = 50000,
    -- how long a 404 (no certificate yet) is remembered at most; a shorter
    -- max-age from the sidecar wins
    negative_ttl = 5,
    -- the same for a 400 (a name the sidecar refuses)
    invalid_ttl = 300,
    -- how long a name the sidecar answered badly for (a status other than
    -- 200, 404 and 400, a malformed response, a certificate that does not
    -- parse) is not asked about again; more than 0
    error_ttl = 2,
    -- how long past its max-age a certificate may be served while the
    -- sidecar fails; 0 keeps it until the shared dict needs the room
    max_stale = 7 * 24 * 3600,
    -- at most one log line per kind of error per worker in this interval
    log_interval = 60,
    keepalive_timeout_ms = 10000,
    keepalive_pool_size = 32,
    -- when the change feed names a certificate this worker serves, fetch
    -- and parse the new one in a timer and swap it in, serving the old
    -- one meanwhile (see prewarm_one); false drops it, and the next
    -- handshake for the name fetches and parses it. A name the feed says
    -- no certificate serves any more is dropped either way
    prewarm = true,
    -- how long, in seconds, a changed name may wait in the pre-warm queue,
    -- its old certificate served meanwhile (a renewal leaves it valid);
    -- a name still queued after that is left to its next handshake (a
    -- worker that falls this far behind pre-warms no stale backlog). A
    -- wave is spread over up to half of it (see prewarm_rest). At most
    -- 3600 (PREWARM_WAIT_MAX)
    prewarm_wait = 120,
}


-- The settings in force, copied into upvalues by apply_options.
local sock_host, sock_port, sock_path
local connect_timeout, read_timeout, lock_timeout
local negative_ttl, invalid_ttl, error_ttl, max_stale, log_interval
local keepalive_timeout, keepalive_pool_size
local prewarm, prewarm_wait
local certs, locks
local lru_size
-- lru holds names served by a certificate of their own (or a SAN of one);
-- churn the names clients can make up at will: unknown names (404) and
-- subnames served through a wildcard. A flood of those cycles churn only.
local lru, churn


-- The worker's record table (see worker_record) last made for each
-- version, so that a version parsed once is not parsed again while its
-- chain and key are in use, whichever record id it comes under. Weak: an
-- entry lives as long as some LRU entry holds it.
local parsed = setmetatable({}, { __mode = "v" })

-- Parsed private keys by the digest of their DER (the sidecar's
-- X-Certserver-Key), so that the certificates that share a key (a key
-- pool) share one parse. Weak, as above.
local keys_by_digest = setmetatable({}, { __mode = "v" })

-- The intermediates this worker parsed, by digest: { sk = the parsed
-- STACK_OF(X509) of the one certificate (its gc frees it), x509 = that
-- certificate }. A chain built for a leaf holds references of its own
-- (chain_push). Not weak: a CA has a handful, kept for the worker's life.
local intermediates = {}

-- This worker's view of the stored records it serves, by record id: one
-- table per record shared by the LRU entries of all its names, so that the
-- change feed can retire them all at once (see drop). Weak, as above.
local records = setmetatable({}, { __mode = "v" })


local function parse_socket(s)
    if str_sub(s, 1, 5) == "unix:" then
        if #s == 5 then
            return nil
        end
        return s, nil
    end
    local host, port = str_match(s, "^%[([%x:]+)%]:(%d+)$")
    if not host then
        host, port = str_match(s, "^([%d.]+):(%d+)$")
    end
    port = tonumber(port)
    if not host or port < 1 or port > 65535 then
        return nil
    end
    if str_find(host, ":", 1, true) then
        host = "[" .. host .. "]"
    end
    return host, port
end


local function apply_options(o)
    sock_host, sock_port = parse_socket(o.socket)
    sock_path = not sock_port and str_sub(sock_host, 6) or nil
    connect_timeout = o.connect_timeout_ms
    read_timeout = o.read_timeout_ms
    lock_timeout = o.lock_timeout_ms / 1000
    negative_ttl = o.negative_ttl
    invalid_ttl = o.invalid_ttl
    error_ttl = o.error_ttl
    max_stale = o.max_stale
    log_interval = o.log_interval
    keepalive_timeout = o.keepalive_timeout_ms
    keepalive_pool_size = o.keepalive_pool_size
    prewarm = o.prewarm
    prewarm_wait = o.prewarm_wait
    certs = ngx_shared[o.shared_dict]
    locks = ngx_shared[o.lock_dict]
    if o.lru_size ~= lru_size then
        lru_size = o.lru_size
        lru = lrucache.new(lru_size)
        churn = lrucache.new(lru_size)
    end
end


-- Usable before configure runs (and without it, if the defaults suit).
apply_options(defaults)


local PREWARM_WAIT_MAX = 3600  -- the longest prewarm_wait (s)


local function misuse(key, what)
    error(str_format("certserver.configure: option %q %s", key, what), 3)
end


-- Validates opts (a table, or nil for all defaults) and puts it in force.
-- Call it from init_by_lua*: once per nginx start or reload. Raises an
-- error for an unknown option, a value of the wrong type or range, or a
-- lua_shared_dict that is not declared.
function _M.configure(opts)
    if opts == nil then
        opts = {}
    elseif type(opts) ~= "table" then
        error("certserver.configure: options must be a table", 2)
    end

    for k in pairs(opts) do
        if defaults[k] == nil then
            misuse(tostring(k), "is unknown")
        end
    end

    local o = {}
    for k, v in pairs(defaults) do
        local given = opts[k]
        if given == nil then
            given = v
        elseif type(given) ~= type(v) then
            misuse(k, "must be a " .. type(v))
        end
        o[k] = given
    end

    for _, k in ipairs({ "connect_timeout_ms", "read_timeout_ms",
                        "lock_timeout_ms", "lru_size", "log_interval",
                        "keepalive_timeout_ms", "keepalive_pool_size",
                        "error_ttl", "prewarm_wait" }) do
        if o[k] <= 0 or o[k] ~= o[k] then  -- NaN too
            misuse(k, "must be positive")
        end
    end
    for _, k in ipairs({ "negative_ttl", "invalid_ttl", "max_stale" }) do
        if o[k] < 0 or o[k] ~= o[k] then
            misuse(k, "must not be negative")
        end
    end
    -- A queued name's old certificate is held fresh this long when the
    -- pre-warm stalls (see hold_over): an hour at most.
    if o.prewarm_wait > PREWARM_WAIT_MAX then
        misuse("prewarm_wait", "must be at most " .. PREWARM_WAIT_MAX)
    end
    for _, k in ipairs({ "lru_size", "keepalive_pool_size" }) do
        if o[k] ~= math_floor(o[k]) or o[k] == math_huge then
            misuse(k, "must be an integer")
        end
    end
    if o.lock_timeout_ms <= o.connect_timeout_ms + o.read_timeout_ms then
        misuse("lock_timeout_ms",
               "must exceed connect_timeout_ms + read_timeout_ms")
    end
    if not parse_socket(o.socket) then
        misuse("socket", "must be \"unix:/path\" or \"IP:port\", not "
                         .. str_format("%q", o.socket))
    end
    if not ngx_shared[o.shared_dict] then
        misuse("shared_dict", "names a lua_shared_dict that is not "
                              .. "declared: " .. o.shared_dict)
    end
    if not ngx_shared[o.lock_dict] then
        misuse("lock_dict", "names a lua_shared_dict that is not "
                            .. "declared: " .. o.lock_dict)
    end

    apply_options(o)
end


-- Rate-limited logging: per kind, one line per log_interval, which says
-- how many were suppressed since the last one.
local log_state = {}

local function log_limited(kind, msg)
    local now = ngx_now()
    local st = log_state[kind]
    if not st then
        st = { next = 0, suppressed = 0 }
        log_state[kind] = st
    end
    if now < st.next then
        st.suppressed = st.suppressed + 1
        return
    end
    st.next = now + log_interval
    if st.suppressed > 0 then
        ngx_log(ERR, "certserver: ", msg, " (and ", st.suppressed,
                " more like it since the last report)")
        st.suppressed = 0
    else
        ngx_log(ERR, "certserver: ", msg)
    end
end


-- What this module calls in OpenSSL's libcrypto, which nginx links
-- dynamically, through the FFI. Declared under private names so other FFI
-- users of OpenSSL are not disturbed.
--
-- key_matches(chain, key) tells whether the private key belongs to the
-- chain's leaf, with OpenSSL's X509_check_private_key; set_priv_key would
-- fail on a mismatch only after clear_certs removed the fallback. When the
-- symbols cannot be resolved the check is skipped.
--
-- chain_push(chain, x509) appends an intermediate the worker parsed once
-- to a chain it parsed from a leaf's PEM (a STACK_OF(X509) whose gc,
-- from ngx.ssl.parse_pem_cert, frees it with sk_X509_pop_free): it takes a
-- reference of its own (X509_up_ref), which the chain's gc gives back, so
-- that the intermediate outlives neither nor is freed twice. x509_of(sk)
-- is the first certificate of a parsed chain, sha256_hex(x509) the
-- lowercase hex SHA-256 of its DER. chain_push is nil when the symbols
-- cannot be resolved: then the sidecar is not asked for the leaf format.
local key_matches, chain_push, x509_of, sha256_hex
do
    local ok = pcall(ffi.cdef, [[
        void *certserver_sk_value(const void *sk, int i)
            __asm__("OPENSSL_sk_value");
        int certserver_sk_num(const void *sk) __asm__("OPENSSL_sk_num");
        int certserver_sk_push(void *sk, const void *p)
            __asm__("OPENSSL_sk_push");
        int certserver_x509_up_ref(void *x509) __asm__("X509_up_ref");
        void certserver_x509_free(void *x509) __asm__("X509_free");
        const void *certserver_evp_sha256(void) __asm__("EVP_sha256");
        int certserver_x509_digest(const void *x509, const void *md,
            unsigned char *out, unsigned int *len) __asm__("X509_digest");
        int certserver_x509_check_private_key(const void *x509,
            const void *pkey) __asm__("X509_check_private_key");
        void certserver_err_clear_error(void) __asm__("ERR_clear_error");
    ]])
    local have_check = ok and pcall(function ()
        return C.certserver_sk_value, C.certserver_x509_check_private_key,
               C.certserver_err_clear_error
    end)
    local have_chain = have_check and pcall(function ()
        return C.certserver_sk_num, C.certserver_sk_push,
               C.certserver_x509_up_ref, C.certserver_x509_free,
               C.certserver_evp_sha256, C.certserver_x509_digest
    end)
    if have_check then
        key_matches = function (chain, key)
            local leaf = C.certserver_sk_value(chain, 0)
            if leaf ~= nil
               and C.certserver_x509_check_private_key(leaf, key) == 1
            then
                return true
            end
            C.certserver_err_clear_error()
            return false
        end
    else
        key_matches = function ()
            return true
        end
    end
    if have_chain then
        chain_push = function (chain, x509)
            if C.certserver_x509_up_ref(x509) ~= 1 then
                return false
            end
            if C.certserver_sk_push(chain, x509) == 0 then
                C.certserver_x509_free(x509)
                return false
            end
            return true
        end
        x509_of = function (sk)
            if C.certserver_sk_num(sk) ~= 1 then
                return nil
            end
            local x = C.certserver_sk_value(sk, 0)
            if x == nil then
                return nil
            end
            return x
        end
        local md = ffi_new("unsigned char[64]")
        local md_len = ffi_new("unsigned int[1]")
        local hex = {}
        sha256_hex = function (x509)
            if C.certserver_x509_digest(x509, C.certserver_evp_sha256(), md,
                                        md_len) ~= 1 or md_len[0] ~= 32 then
                C.certserver_err_clear_error()
                return nil
            end
            for i = 0, 31 do
                hex[i + 1] = str_format("%02x", md[i])
            end
            return table_concat(hex, "", 1, 32)
        end
    end
end


-- leaf_ttl(chain) is the number of seconds the leaf of a parsed chain
-- is still valid for, until its notAfter (ASN1_TIME_diff from now; not
-- positive once it has expired); nil when it cannot tell (the symbols
-- cannot be resolved, or OpenSSL fails to compare).
local leaf_ttl
do
    local ok = pcall(ffi.cdef, [[
        const void *certserver_x509_get0_not_after(const void *x509)
            __asm__("X509_get0_notAfter");
        int certserver_asn1_time_diff(int *pday, int *psec,
                                      const void *from, const void *to)
            __asm__("ASN1_TIME_diff");
    ]])
    ok = ok and pcall(function ()
        return C.certserver_sk_value, C.certserver_x509_get0_not_after,
               C.certserver_asn1_time_diff, C.certserver_err_clear_error
    end)
    if ok then
        local day = ffi_new("int[1]")
        local sec = ffi_new("int[1]")
        leaf_ttl = function (chain)
            local leaf = C.certserver_sk_value(chain, 0)
            if leaf == nil then
                return nil
            end
            local t = C.certserver_x509_get0_not_after(leaf)
            if t == nil
               or C.certserver_asn1_time_diff(day, sec, nil, t) ~= 1 then
                C.certserver_err_clear_error()
                return nil
            end
            return day[0] * 86400 + sec[0]
        end
    else
        leaf_ttl = function ()
            return nil
        end
    end
end


-- p256_key(pem) builds the private key of pem, when it is an ECDSA P-256
-- key in the layout Go, lego and OpenSSL write (a PKCS #8 "PRIVATE KEY",
-- what the sidecar sends for the keys it makes, or a SEC 1 "EC PRIVATE
-- KEY" that names its curve), from its scalar and public point with
-- EVP_PKEY_fromdata: OpenSSL's part takes 12 to 21 µs where OpenSSL 3.0's
-- decoder, behind ngx.ssl.parse_pem_priv_key, takes 340 to 465 µs (in
-- C), the whole of it 40 to 85 µs at p50 where parse_pem_priv_key took
-- 530 (BenchmarkLuaNewNames, loaded machine); the key is of the same
-- size (2.2 KB), native to OpenSSL's provider as the decoder's is.
-- Returns the EVP_PKEY (cdata whose gc frees it), or nil and why not: a
-- key of another type or curve, a layout this strict reader does not
-- take (lengths not in DER, optional fields it does not expect, no
-- public point), a failing OpenSSL call. The caller then parses the PEM
-- as before: this only ever makes a key cheaper. The public point is
-- taken as it is, as OpenSSL's decoder takes it: key_matches compares it
-- with the leaf's. nil when OpenSSL's functions cannot be resolved.
local p256_key
do
    local ok = pcall(ffi.cdef, [[
        void *certserver_bn_secure_new(void) __asm__("BN_secure_new");
        void *certserver_bn_bin2bn(const unsigned char *s, int len,
            void *ret) __asm__("BN_bin2bn");
        void certserver_bn_clear_free(void *bn) __asm__("BN_clear_free");
        void *certserver_param_bld_new(void) __asm__("OSSL_PARAM_BLD_new");
        int certserver_param_bld_push_utf8_string(void *bld,
            const char *key, const char *buf, size_t bsize)
            __asm__("OSSL_PARAM_BLD_push_utf8_string");
        int certserver_param_bld_push_bn(void *bld, const char *key,
            const void *bn) __asm__("OSSL_PARAM_BLD_push_BN");
        int certserver_param_bld_push_octet_string(void *bld,
            const char *key, const void *buf, size_t bsize)
            __asm__("OSSL_PARAM_BLD_push_octet_string");
        void *certserver_param_bld_to_param(void *bld)
            __asm__("OSSL_PARAM_BLD_to_param");
        void certserver_param_bld_free(void *bld)
            __asm__("OSSL_PARAM_BLD_free");
        void certserver_param_free(void *params) __asm__("OSSL_PARAM_free");
        void *certserver_pkey_ctx_new_from_name(void *libctx,
            const char *name, const char *propquery)
            __asm__("EVP_PKEY_CTX_new_from_name");
        void certserver_pkey_ctx_free(void *ctx)
            __asm__("EVP_PKEY_CTX_free");
        int certserver_pkey_fromdata_init(void *ctx)
            __asm__("EVP_PKEY_fromdata_init");
        int certserver_pkey_fromdata(void *ctx, void **pkey, int selection,
            void *params) __asm__("EVP_PKEY_fromdata");
        void certserver_pkey_free(void *pkey) __asm__("EVP_PKEY_free");
    ]])
    ok = ok and pcall(function ()
        return C.certserver_bn_secure_new, C.certserver_bn_bin2bn,
               C.certserver_bn_clear_free, C.certserver_param_bld_new,
               C.certserver_param_bld_push_utf8_string,
               C.certserver_param_bld_push_bn,
               C.certserver_param_bld_push_octet_string,
               C.certserver_param_bld_to_param,
               C.certserver_param_bld_free, C.certserver_param_free,
               C.certserver_pkey_ctx_new_from_name,
               C.certserver_pkey_ctx_free, C.certserver_pkey_fromdata_init,
               C.certserver_pkey_fromdata, C.certserver_pkey_free,
               C.certserver_err_clear_error
    end)

    -- The DER of the OIDs id-ecPublicKey (1.2.840.10045.2.1) and
    -- prime256v1 (1.2.840.10045.3.1.7), without tag and length.
    local OID_EC = "\42\134\72\206\61\2\1"
    local OID_P256 = "\42\134\72\206\61\3\1\7"
    local SCALAR = 32    -- bytes of a P-256 private scalar
    local POINT = 65     -- bytes of an uncompressed P-256 point, 0x04 first
    local KEYPAIR = 0x87 -- EVP_PKEY_KEYPAIR in OpenSSL 3.0
    -- A PEM private key block: its type ("" or "EC " are read) and its
    -- base64 lines.
    local PEM_KEY = "^%-%-%-%-%-BEGIN ([A-Z ]*)PRIVATE KEY%-%-%-%-%-\r?\n"
                    .. "(.-)\r?\n%-%-%-%-%-END %1PRIVATE KEY%-%-%-%-%-"

    -- der_item(s, pos, last, tag, what) reads the DER element of tag at
    -- pos of s, which must end by last: returns the first and last
    -- position of its content (last < first when it is empty), or nil and
    -- what is wrong with the element named what.
    local function der_item(s, pos, last, tag, what)
        if pos + 1 > last then
            return nil, what .. " is missing or truncated"
        end
        if str_byte(s, pos) ~= tag then
            return nil, str_format("%s has tag 0x%02x, not 0x%02x", what,
                                   str_byte(s, pos), tag)
        end
        local len = str_byte(s, pos + 1)
        local first = pos + 2
        if len > 0x80 and len <= 0x82 then
            local n = len - 0x80
            if first + n - 1 > last then
                return nil, what .. " is truncated"
            end
            len = str_byte(s, first)
            if n == 2 then
                len = len * 256 + str_byte(s, first + 1)
            end
            if len < (n == 1 and 0x80 or 0x100) then
                return nil, what .. "'s length is not in DER"
            end
            first = first + n
        elseif len >= 0x80 then
            return nil, what .. "'s length is not in DER or too long"
        end
        local stop = first + len - 1
        if stop > last then
            return nil, what .. " is truncated"
        end
        return first, stop
    end

    -- ec_private_key(s, pos, last, in_pkcs8) reads the ECPrivateKey (RFC
    -- 5915 section 3) that spans pos to last of s: version 1, a 32-byte
    -- scalar, the curve (optional in PKCS #8, where the algorithm names
    -- it; then P-256 when present), and the 65-byte uncompressed public
    -- point. Returns the positions of the scalar and of the point, or
    -- nil and what is wrong.
    local function ec_private_key(s, pos, last, in_pkcs8)
        local a, b = der_item(s, pos, last, 0x30, "ECPrivateKey")
        if not a then
            return nil, b
        end
        if b ~= last then
            return nil, "bytes follow the ECPrivateKey"
        end
        local v, v_end = der_item(s, a, b, 0x02, "ECPrivateKey version")
        if not v then
            return nil, v_end
        end
        if v ~= v_end or str_byte(s, v) ~= 1 then
            return nil, "ECPrivateKey version is not 1"
        end
        local d, d_end = der_item(s, v_end + 1, b, 0x04, "private scalar")
        if not d then
            return nil, d_end
        end
        if d_end - d + 1 ~= SCALAR then
            return nil, "private scalar of " .. (d_end - d + 1)
                        .. " bytes, not " .. SCALAR
        end
        local at = d_end + 1
        if at <= b and str_byte(s, at) == 0xa0 then
            local p, p_end = der_item(s, at, b, 0xa0, "curve parameters")
            if not p then
                return nil, p_end
            end
            local o, o_end = der_item(s, p, p_end, 0x06, "curve")
            if not o then
                return nil, o_end
            end
            if o_end ~= p_end or str_sub(s, o, o_end) ~= OID_P256 then
                return nil, "curve is not P-256"
            end
            at = p_end + 1
        elseif not in_pkcs8 then
            return nil, "curve is not named"
        end
        if at > b then
            return nil, "no public point"
        end
        local q, q_end = der_item(s, at, b, 0xa1, "public point")
        if not q then
            return nil, q_end
        end
        if q_end ~= b then
            return nil, "bytes follow the public point"
        end
        local bits, bits_end = der_item(s, q, q_end, 0x03, "public point")
        if not bits then
            return nil, bits_end
        end
        if bits_end ~= q_end or bits_end - bits ~= POINT
           or str_byte(s, bits) ~= 0 or str_byte(s, bits + 1) ~= 4
        then
            return nil, "public point is not an uncompressed P-256 point"
        end
        return d, bits + 1
    end

    -- pkcs8(s) reads the PrivateKeyInfo (RFC 5208 section 5) s of an EC
    -- key on P-256, without attributes. Returns what ec_private_key does.
    local function pkcs8(s)
        local last = #s
        local a, b = der_item(s, 1, last, 0x30, "PrivateKeyInfo")
        if not a then
            return nil, b
        end
        if b ~= last then
            return nil, "bytes follow the PrivateKeyInfo"
        end
        local v, v_end = der_item(s, a, b, 0x02, "PrivateKeyInfo version")
        if not v then
            return nil, v_end
        end
        if v ~= v_end or str_byte(s, v) ~= 0 then
            return nil, "PrivateKeyInfo version is not 0"
        end
        local g, g_end = der_item(s, v_end + 1, b, 0x30, "algorithm")
        if not g then
            return nil, g_end
        end
        local o, o_end = der_item(s, g, g_end, 0x06, "algorithm")
        if not o then
            return nil, o_end
        end
        if str_sub(s, o, o_end) ~= OID_EC then
            return nil, "not an EC key"
        end
        local c, c_end = der_item(s, o_end + 1, g_end, 0x06, "curve")
        if not c then
            return nil, c_end
        end
        if c_end ~= g_end or str_sub(s, c, c_end) ~= OID_P256 then
            return nil, "curve is not P-256"
        end
        local k, k_end = der_item(s, g_end + 1, b, 0x04, "privateKey")
        if not k then
            return nil, k_end
        end
        if k_end ~= b then
            return nil, "attributes or bytes follow the privateKey"
        end
        return ec_private_key(s, k, k_end, true)
    end

    -- The scalar then the point, for the duration of one p256_key call;
    -- emptied before it returns.
    local buf = ffi_new("unsigned char[?]", SCALAR + POINT)
    local out = ffi_new("void *[1]")
    -- One EVP_PKEY_CTX for EC keys per worker, made at the first key and
    -- set up anew (EVP_PKEY_fromdata_init) for each: making one costs 4
    -- to 11 µs.
    local pkey_ctx

    -- fromdata() makes the EVP_PKEY of the scalar and point in buf.
    -- Returns it (a cdata without gc), or nil and the OpenSSL call that
    -- failed; frees everything else it allocated either way.
    local function fromdata()
        local bn = C.certserver_bn_secure_new()
        if bn == nil then
            return nil, "BN_secure_new failed"
        end
        local pkey, err
        local bld = C.certserver_param_bld_new()
        if C.certserver_bn_bin2bn(buf, SCALAR, bn) == nil then
            err = "BN_bin2bn failed"
        elseif bld == nil
               or C.certserver_param_bld_push_utf8_string(bld, "group",
                                                          "prime256v1", 0)
                  ~= 1
               or C.certserver_param_bld_push_bn(bld, "priv", bn) ~= 1
               or C.certserver_param_bld_push_octet_string(bld, "pub",
                                                           buf + SCALAR,
                                                           POINT) ~= 1
        then
            err = "OSSL_PARAM_BLD failed"
        else
            local params = C.certserver_param_bld_to_param(bld)
            if params == nil then
                err = "OSSL_PARAM_BLD_to_param failed"
            else
                if pkey_ctx == nil then
                    pkey_ctx = C.certserver_pkey_ctx_new_from_name(nil, "EC",
                                                                   nil)
                    if pkey_ctx ~= nil then
                        pkey_ctx = ffi_gc(pkey_ctx,
                                          C.certserver_pkey_ctx_free)
                    end
                end
                if pkey_ctx == nil then
                    pkey_ctx = nil
                    err = "EVP_PKEY_CTX_new_from_name failed"
                elseif C.certserver_pkey_fromdata_init(pkey_ctx) ~= 1 then
                    pkey_ctx = nil  -- its gc frees it; a new one next time
                    err = "EVP_PKEY_fromdata_init failed"
                else
                    out[0] = nil
                    if C.certserver_pkey_fromdata(pkey_ctx, out, KEYPAIR,
                                                  params) == 1
                       and out[0] ~= nil
                    then
                        pkey = out[0]
                        out[0] = nil
                    else
                        err = "EVP_PKEY_fromdata failed"
                    end
                end
                C.certserver_param_free(params)
            end
        end
        if bld ~= nil then
            C.certserver_param_bld_free(bld)
        end
        C.certserver_bn_clear_free(bn)
        return pkey, err
    end

    if ok then
        p256_key = function (pem)
            local typ, b64 = str_match(pem, PEM_KEY)
            if not typ or typ ~= "" and typ ~= "EC " then
                return nil, "not a PRIVATE KEY or EC PRIVATE KEY PEM block"
            end
            local der = ngx_decode_base64((str_gsub(b64, "[\r\n]", "")))
            if not der then
                return nil, "PEM is not base64"
            end
            local d, q
            if typ == "" then
                d, q = pkcs8(der)
            else
                d, q = ec_private_key(der, 1, #der, false)
            end
            if not d then
                return nil, q
            end
            ffi_copy(buf, str_sub(der, d, d + SCALAR - 1), SCALAR)
            ffi_copy(buf + SCALAR, str_sub(der, q, q + POINT - 1), POINT)
            local pkey, err = fromdata()
            ffi_fill(buf, SCALAR + POINT)
            if not pkey then
                C.certserver_err_clear_error()
                return nil, err
            end
            return ffi_gc(pkey, C.certserver_pkey_free)
        end
    end
end


-- clock() is a monotonic time in seconds with nanoseconds (ngx.now()
-- moves only once per event loop turn), for the timings of _M.stats.
local clock
do
    local ok = pcall(ffi.cdef, [[
        struct certserver_timespec { long sec; long nsec; };
        int certserver_clock_gettime(int clock,
            struct certserver_timespec *ts) __asm__("clock_gettime");
    ]])
    if ok then
        ok = pcall(function () return C.certserver_clock_gettime end)
    end
    if ok then
        local CLOCK_MONOTONIC = 1
        local ts = ffi_new("struct certserver_timespec")
        clock = function ()
            C.certserver_clock_gettime(CLOCK_MONOTONIC, ts)
            return tonumber(ts.sec) + tonumber(ts.nsec) * 1e-9
        end
    else
        clock = ngx_now
    end
end


local EACCES = 13
local PERMISSION_HINT = ": nginx's user must be in the sidecar's "
                        .. "socket_group (certserver doctor checks it)"


-- socket_file_exists(path) tells whether a unix socket file exists, and
-- when it cannot tell, why (errno): EACCES for a directory on the path
-- that nginx's user may not search. nginx logs a failed connect to a
-- missing socket file at [crit] once per attempt; a stopped sidecar
-- removes its socket, so look first.
local socket_file_exists
do
    local ok = pcall(ffi.cdef, [[
        int certserver_access(const char *path, int mode) __asm__("access");
    ]])
    if ok then
        ok = pcall(function () return C.certserver_access end)
    end
    if ok then
        socket_file_exists = function (path)
            if C.certserver_access(path, 0) == 0 then
                return true
            end
            return false, ffi_errno()
        end
    else
        socket_file_exists = function ()
            return true
        end
    end
end


-- refused(host, port) tells whether the sidecar's address refuses a
-- connection right now, with a non-blocking connect() of the worker's own:
-- no cosocket, so nginx logs nothing, and no waiting. A unix socket
-- answers at once; so does a TCP loopback address that nobody listens on
-- (a connection still in progress counts as accepted). Any other error
-- is a refusal: a missing socket file, and a permission denied on it,
-- which a real request would meet too. Without the FFI symbols it says
-- false: the caller then learns from a real request.
local refused
do
    local AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
    local SOCK_STREAM_NONBLOCK_CLOEXEC = 1 + 2048 + 524288  -- Linux
    local SOL_SOCKET, SO_ERROR = 1, 4
    local EINTR, EAGAIN, EINPROGRESS = 4, 11, 115
    local ok = pcall(ffi.cdef, [[
        struct certserver_sockaddr_un {
            unsigned short family; char path[108];
        };
        struct certserver_sockaddr_in {
            unsigned short family; unsigned short port;
            unsigned char addr[4]; unsigned char zero[8];
        };
        struct certserver_sockaddr_in6 {
            unsigned short family; unsigned short port; unsigned int flow;
            unsigned char addr[16]; unsigned int scope;
        };
        int certserver_socket(int domain, int type, int protocol)
            __asm__("socket");
        int certserver_connect(int fd, const void *addr, unsigned int len)
            __asm__("connect");
        int certserver_getsockopt(int fd, int level, int name, void *val,
            unsigned int *len) __asm__("getsockopt");
        int certserver_close(int fd) __asm__("close");
        int certserver_inet_pton(int af, const char *src, void *dst)
            __asm__("inet_pton");
    ]])
    if ok then
        ok = pcall(function ()
            return C.certserver_socket, C.certserver_connect,
                   C.certserver_getsockopt, C.certserver_close,
                   C.certserver_inet_pton
        end)
    end

    -- sockaddr(host, port) builds the address once per configuration.
    local cached_for, cached_addr, cached_family
    local function sockaddr(host, port)
        local key = host .. ":" .. tostring(port)
        if cached_for == key then
            return cached_addr, cached_family
        end
        local addr, family
        if not port then
            local path = str_sub(host, 6)
            if #path >= 108 then
                return nil
            end
            addr = ffi_new("struct certserver_sockaddr_un")
            addr.family = AF_UNIX
            ffi.copy(addr.path, path)
            family = AF_UNIX
        else
            local v6 = str_match(host, "^%[(.*)%]$")
            local p = math_floor(port / 256) + (port % 256) * 256  -- htons
            if v6 then
                addr = ffi_new("struct certserver_sockaddr_in6")
                family = AF_INET6
                if C.certserver_inet_pton(AF_INET6, v6, addr.addr) ~= 1 then
                    return nil
                end
            else
                addr = ffi_new("struct certserver_sockaddr_in")
                family = AF_INET
                if C.certserver_inet_pton(AF_INET, host, addr.addr) ~= 1 then
                    return nil
                end
            end
            addr.family = family
            addr.port = p
        end
        cached_for, cached_addr, cached_family = key, addr, family
        return addr, family
    end

    if ok then
        local errbuf = ffi_new("int[1]")
        local errlen = ffi_new("unsigned int[1]")
        refused = function (host, port)
            local addr, family = sockaddr(host, port)
            if not addr then
                return false
            end
            local fd = C.certserver_socket(family, SOCK_STREAM_NONBLOCK_CLOEXEC,
                                           0)
            if fd < 0 then
                return false
            end
            local rc = C.certserver_connect(fd, addr, ffi_sizeof(addr))
            local errno = rc == 0 and 0 or ffi_errno()
            if errno ~= 0 and family ~= AF_UNIX then
                -- in progress: a refusal on loopback is already known
                errlen[0] = 4
                if C.certserver_getsockopt(fd, SOL_SOCKET, SO_ERROR, errbuf,
                                           errlen) == 0 then
                    errno = errbuf[0]
                end
            end
            C.certserver_close(fd)
            return errno ~= 0 and errno ~= EINPROGRESS and errno ~= EAGAIN
                   and errno ~= EINTR
        end
    else
        refused = function ()
            return false
        end
    end
end


-- Timings of the work a new name costs a worker, for _M.stats: per step,
-- how many, their total and the last STAT_SAMPLES durations (seconds).
local STAT_SAMPLES = 4096
local stats = {}

local function stat(step, since)
    local d = clock() - since
    local st = stats[step]
    if not st then
        st = { n = 0, total = 0, samples = {} }
        stats[step] = st
    end
    st.n = st.n + 1
    st.total = st.total + d
    st.samples[(st.n - 1) % STAT_SAMPLES + 1] = d
end


-- _M.stats() returns this worker's timings of its first handshakes for
-- names new to it, by step: "fetch" (GET /v1/certs from the sidecar),
-- "cert" (ngx.ssl.parse_pem_cert of what came: the leaf alone in the leaf
-- format, the whole chain in the first), "key" (parsing the key, only
-- when no certificate before had the same key; counted again as
-- "key_fast" when p256_key built it, as "key_pem" when
-- parse_pem_priv_key parsed it), "chain" (the worker's
-- parsed intermediates added to the leaf), "intermediate" (parsing one
-- intermediate new to the worker), "chain_fetch" (GET /v1/chains from the
-- sidecar). Where the parsing of a record happened, all of it (its
-- intermediates and the parsed parts, cert, key and chain, counted above
-- too): "parse_handshake" while a handshake waited, "parse_timer" in a
-- timer, off the handshake path (pre-warming). The change feed:
-- "feed_poll" (a poll answered), "feed_yield" (a poll applying a long
-- answer let handshakes run, after each FEED_CHUNK names), "feed_gone"
-- (a name the feed said no certificate serves, dropped at once: a count,
-- its durations 0);
-- pre-warming (see prewarm_one): "prewarm_wait" (time a name waited in
-- the queue), "prewarm_requeued" (a name another worker was fetching put
-- at the end of the queue, once), then one of "prewarm_fetched" (asked
-- the sidecar), "prewarm_loaded" (took another worker's answer from the
-- shared dict), "prewarm_dropped" (dropped instead). Each is { n =
-- count, total = seconds, samples = the last STAT_SAMPLES durations in
-- seconds, in no order }. For benchmarks and tests; the table is the
-- worker's own, not a copy.
function _M.stats()
    return stats
end


-- load_intermediate(d, pem) parses the intermediate of digest d from pem
-- into the worker's table, once. Returns its X509 cdata, or nil, err when
-- pem is not one certificate of that digest.
local function load_intermediate(d, pem)
    local t0 = clock()
    local ok, sk, err = pcall(ssl_parse_pem_cert, pem)
    if not ok or not sk then
        return nil, "intermediate " .. d .. " does not parse: "
                    .. tostring(err or sk)
    end
    local x = x509_of(sk)
    if not x then
        return nil, "intermediate " .. d .. " is not one certificate"
    end
    if sha256_hex(x) ~= d then
        return nil, "intermediate " .. d .. " has another digest"
    end
    intermediates[d] = { sk = sk, x509 = x }
    stat("intermediate", t0)
    return x
end


-- intermediate(d) is the worker's parsed intermediate of digest d, parsed
-- from the shared dict when new to the worker; nil when neither has it.
local function intermediate(d)
    local i = intermediates[d]
    if i then
        return i.x509
    end
    local pem = certs:get(CHAIN_PREFIX .. d)
    if not pem then
        return nil
    end
    local x, err = load_intermediate(d, pem)
    if not x then
        log_limited("parse", "cached " .. err)
        certs:delete(CHAIN_PREFIX .. d)
    end
    return x
end


-- parse_key(pem) parses the PEM private key at the start of pem: with
-- p256_key when it takes it (timed as "key_fast"), else with
-- ngx.ssl.parse_pem_priv_key (timed as "key_pem", the failed try
-- included). Returns the key, or nil and what is wrong with it.
local function parse_key(pem)
    local t0 = clock()
    local why
    if p256_key then
        local key
        key, why = p256_key(pem)
        if key then
            stat("key_fast", t0)
            return key
        end
    end
    local ok, key, err = pcall(ssl_parse_pem_priv_key, pem)
    if not ok or not key then
        err = "bad private key: " .. tostring(err or key)
        if why then
            err = err .. " (read as P-256: " .. why .. ")"
        end
        return nil, err
    end
    stat("key_pem", t0)
    return key
end


-- MISSING is the error of parse when an intermediate of the record is in
-- neither the worker nor the shared dict: the sidecar must be asked.
local MISSING = "missing intermediate"


-- Parses a record's content (see RECORD_PREFIX) into cdata, unless a
-- record table of this version is at hand (see parsed). Returns chain,
-- key, err: the parsed chain and key and a nil err; or nil, nil and what
-- is wrong (MISSING when an intermediate is not at hand).
local function parse(body, version)
    local done = parsed[version]
    if done then
        return done.chain, done.key, nil
    end
    local chain, key

    local t_parse = clock()
    local key_digest, digests
    if str_sub(body, 1, #LEAF_MARK) == LEAF_MARK then
        local nl = str_find(body, "\n", 1, true)
        if not nl then
            return nil, nil, "malformed leaf record"
        end
        local meta = str_sub(body, #LEAF_MARK + 1, nl - 1)
        body = str_sub(body, nl + 1)
        digests = {}
        for d in str_gmatch(meta, "%S+") do
            if key_digest then
                digests[#digests + 1] = d
            else
                key_digest = d
            end
        end
        for i = 1, #digests do
            local x = intermediate(digests[i])
            if not x then
                return nil, nil, MISSING
            end
            digests[i] = x
        end
    end

    local at = str_find(body, KEY_PATTERN)
    if not at then
        return nil, nil, "no private key in the response"
    end
    local t0 = clock()
    local ok, err
    ok, chain, err = pcall(ssl_parse_pem_cert, str_sub(body, 1, at - 1))
    if not ok or not chain then
        return nil, nil, "bad certificate chain: " .. tostring(err or chain)
    end
    stat("cert", t0)
    if digests then
        t0 = clock()
        for i = 1, #digests do
            if not chain_push(chain, digests[i]) then
                return nil, nil, "cannot add an intermediate to the chain"
            end
        end
        stat("chain", t0)
    end
    key = key_digest and keys_by_digest[key_digest]
    if not key then
        t0 = clock()
        key, err = parse_key(str_sub(body, at))
        if not key then
            return nil, nil, err
        end
        stat("key", t0)
    end
    if not key_matches(chain, key) then
        return nil, nil, "the private key does not match the certificate"
    end

    if key_digest then
        keys_by_digest[key_digest] = key
    end
    stat(ngx_get_phase() == "timer" and "parse_timer" or "parse_handshake",
         t_parse)
    return chain, key, nil
end


local function stale_deadline(fresh_until)
    if max_stale > 0 then
        return fresh_until + max_stale
    end
    return math_huge
end


-- A cache entry of a name: rec, the record serving it (nil for a negative
-- answer), fresh until fresh_until; after that the worker looks for a
-- newer copy, and may serve it stale (while the sidecar fails) until
-- stale_until. fetched is when the sidecar gave the answer. wild is true
-- when the name is served through the wildcard pattern one label up: one
-- of the names a client can make up by the thousand.
local function new_entry(fresh_until, fetched, rec, wild)
    -- Four fields fill the hash part a constructor of four makes; wild,
    -- rare, is added when true (nil is false), so that an entry takes 4
    -- slots, not 8.
    local entry = {
        fresh_until = fresh_until,
        stale_until = stale_deadline(fresh_until),
        fetched = fetched,
        rec = rec,
    }
    if wild then
        entry.wild = true
    end
    return entry
end


-- The worker's record table for id at version, parsing body when this
-- version is new to the worker. Returns the record, or nil, err. The
-- record it replaces is marked dropped, so that no name cached with it (a
-- wildcard's subname, another SAN) keeps serving it. With keep false, a
-- new table is returned without replacing the worker's current one.
local function worker_record(id, version, body, keep)
    local rec = records[id]
    if rec and rec.version == version and not rec.dropped then
        return rec
    end
    local chain, key, err = parse(body, version)
    if not chain then
        return nil, err
    end
    local new = { version = version, chain = chain, key = key }
    parsed[version] = new
    if keep == false and rec and not rec.dropped then
        return new
    end
    if rec then
        rec.dropped = true
    end
    records[id] = new
    return new
end


-- The shared dict holds, per name asked for, "<fresh_until> <fetched>
-- <record id>" (or "-" for a negative answer), followed by " *" when the
-- name is served through the wildcard pattern one label up; per record
-- RECORD_PREFIX .. id: "<version>\n<PEM>", so that all names of a record,
-- a wildcard's subnames among them, share one copy of the PEM; and per
-- wildcard pattern that served a name WILD_PREFIX .. pattern: the id of
-- its record (which need not be the pattern: [example.com, *.example.com]).
local function encode_name(fresh_until, fetched, id, wild)
    if wild then
        return str_format("%.3f %.3f %s *", fresh_until, fetched, id)
    end
    return str_format("%.3f %.3f %s", fresh_until, fetched, id)
end


-- Reads record id from the shared dict. Returns the worker's record, or
-- nil when it is not cached (or does not parse: then it is removed).
local function load_record(id)
    local v = certs:get(RECORD_PREFIX .. id)
    if not v then
        return nil
    end
    local nl = str_find(v, "\n", 1, true)
    if not nl then
        certs:delete(RECORD_PREFIX .. id)
        return nil
    end
    local rec, err = worker_record(id, str_sub(v, 1, nl - 1),
                                   str_sub(v, nl + 1))
    if err == MISSING then
        return nil  -- the shared dict lost an intermediate: ask the sidecar
    end
    if not rec then
        log_limited("parse", "cached certificate " .. id
                             .. " does not parse: " .. err)
        certs:delete(RECORD_PREFIX .. id)
        return nil
    end
    return rec
end


-- remember(name, entry) puts entry in the worker's LRU for its kind, and
-- takes name out of the other.
local function remember(name, entry)
    if entry.rec and not entry.wild then
        lru:set(name, entry)
        churn:delete(name)
        return
    end
    churn:set(name, entry)
    lru:delete(name)
end


-- forget(name) removes name from the worker's LRUs.
local function forget(name)
    lru:delete(name)
    churn:delete(name)
end


-- Reads name from the shared dict into the LRU. cur is the worker's LRU
-- entry (or nil). Returns the entry, fresh or stale, or cur when the
-- shared dict has nothing usable.
local function load_shared(name, cur)
    local v = certs:get(name)
    if not v then
        return cur
    end
    if str_find(v, "\n", 1, true) then
        -- left by version 0.1 of this module (before a reload): a miss
        certs:delete(name)
        return cur
    end
    local fresh_until, fetched, id, wild = str_match(v,
                                                    "^(%S+) (%S+) (%S+)(.*)$")
    fresh_until, fetched = tonumber(fresh_until), tonumber(fetched)
    if not (fresh_until and fetched and (wild == "" or wild == " *")) then
        log_limited("shared", "malformed shared dict entry for " .. name)
        certs:delete(name)
        return cur
    end

    local rec
    if id ~= NEGATIVE then
        rec = load_record(id)
        if not rec then
            return cur
        end
    end
    if cur and cur.rec == rec and cur.fetched >= fetched then
        return cur
    end
    local entry = new_entry(fresh_until, fetched, rec, wild == " *")
    local reval = certs:get(REVAL_KEY)
    if reval and fetched < reval then
        entry.fresh_until = 0  -- the feed lost track since: ask again
    end
    remember(name, entry)
    return entry
end


local CERTS_PATH = "/v1/certs/"
local CHAINS_PATH = "/v1/chains/"
-- The feed with marks (certserver.ChangesPath): a name no certificate
-- serves any more comes as "gone NAME" (GONE_LINE). An older sidecar
-- ignores marks=1 and lists every name plain, as before.
local CHANGES_PATH = "/v1/changes?marks=1&since="
-- The sidecar's leaf format (certserver.LeafFormat), asked for when the
-- chain can be built from parsed parts (chain_push).
local LEAF_FORMAT = "application/vnd.certserver.leaf+pem"
local REQUEST_TAIL = " HTTP/1.1\r\nHost: certserver\r\n"
                     .. "User-Agent: certserver-lua\r\n"
                     .. (chain_push and "Accept: " .. LEAF_FORMAT .. "\r\n"
                         or "")
                     .. "\r\n"


-- Sends GET path on sock and reads the response, a body of at most
-- max_body bytes. Returns res, err, why: the response res = { status,
-- body, max_age (nil without one), record (X-Certserver-Record, or nil),
-- match (X-Certserver-Match, or nil), leaf (true for the leaf format),
-- key_digest and chain (X-Certserver-Key and X-Certserver-Chain, nil
-- without), keepalive } and nil, nil; or nil, what went wrong, and why it
-- failed:
-- CLOSED when the connection turned out closed before anything was
-- received (worth one more try on a new connection; a timeout is not
-- retried, it would only double the wait), SLOW when no answer started
-- within read_timeout, BAD_ANSWER when a status line came and what
-- followed was wrong, else UNANSWERED.
local function exchange(sock, path, max_body)
    local ok, err = sock:send("GET " .. path .. REQUEST_TAIL)
    if not ok then
        return nil, "send: " .. err, err == "timeout" and SLOW or CLOSED
    end

    local line
    line, err = sock:receive("*l")
    if not line then
        if err == "timeout" then
            return nil, "no answer within " .. read_timeout .. " ms", SLOW
        end
        return nil, "read status line: " .. err,
               err == "closed" and CLOSED or UNANSWERED
    end
    local status = tonumber(str_match(line, "^HTTP/1%.[01] (%d%d%d)"))
    if not status then
        return nil, "malformed status line", BAD_ANSWER
    end

    local length, max_age, record, match, keepalive, leaf, key_digest, chain
    local complete = false
    for _ = 1, MAX_HEADERS do
        line, err = sock:receive("*l")
        if not line then
            return nil, "read header: " .. err, BAD_ANSWER
        end
        if line == "" then
            complete = true
            break
        end
        local k, v = str_match(line, "^([^:]+):%s*(.-)%s*$")
        if k then
            k = str_lower(k)
            if k == "content-length" then
                length = tonumber(str_match(v, "^%d+$"))
            elseif k == "cache-control" then
                max_age = tonumber(str_match(v, "max%-age=(%d+)"))
            elseif k == "x-certserver-record" then
                record = v
            elseif k == "x-certserver-match" then
                match = v
            elseif k == "content-type" then
                leaf = str_lower(v) == LEAF_FORMAT
            elseif k == "x-certserver-key" then
                key_digest = v
            elseif k == "x-certserver-chain" then
                chain = v
            elseif k == "connection" then
                keepalive = str_lower(v) ~= "close"
            elseif k == "transfer-encoding" then
                return nil, "unsupported transfer-encoding " .. v, BAD_ANSWER
            end
        end
    end
    if not complete then
        return nil, "too many header lines", BAD_ANSWER
    end
    if not length then
        return nil, "no valid content-length", BAD_ANSWER
    end
    if length > max_body then
        return nil, "body of " .. length .. " bytes is too large", BAD_ANSWER
    end

    local body = ""
    if length > 0 then
        body, err = sock:receive(length)
        if not body then
            return nil, "read body: " .. err, BAD_ANSWER
        end
    end
    return { status = status, body = body, max_age = max_age,
             record = record, match = match, leaf = leaf,
             key_digest = key_digest, chain = chain,
             keepalive = keepalive ~= false }, nil, nil
end


-- Requests in a row, in this worker, that got no answer in time (SLOW).
local slow_in_row = 0


-- Asks the sidecar for path. Returns res, err, why as exchange does, but
-- never CLOSED: a pooled connection found closed is tried once more on a
-- new one, and a new connection found closed is UNANSWERED.
local function fetch(path, max_body)
    if sock_path then
        local exists, errno = socket_file_exists(sock_path)
        if errno == EACCES then
            return nil, "permission denied on a directory of " .. sock_path
                        .. PERMISSION_HINT, UNANSWERED
        end
        if not exists then
            return nil, "no socket file " .. sock_path, UNANSWERED
        end
    end
    local err
    for _ = 1, 2 do
        local sock = ngx_socket_tcp()
        sock:settimeouts(connect_timeout, read_timeout, read_timeout)
        local ok
        if sock_port then
            ok, err = sock:connect(sock_host, sock_port)
        else
            ok, err = sock:connect(sock_host)
        end
        if not ok then
            if str_find(err, "permission denied", 1, true) then
                err = err .. PERMISSION_HINT
            end
            return nil, "connect: " .. err, UNANSWERED
        end
        local reused = sock:getreusedtimes()

        local res, why
        res, err, why = exchange(sock, path, max_body)
        if res then
            slow_in_row = 0  -- answers again: no longer in a row
        end
        if res then
            if res.keepalive then
                sock:setkeepalive(keepalive_timeout, keepalive_pool_size)
            else
                sock:close()
            end
            return res, nil, nil
        end
        sock:close()
        if why ~= CLOSED then
            return nil, err, why
        end
        if reused == 0 then
            break
        end
    end
    return nil, err, UNANSWERED
end


-- where() names the sidecar's address for log lines.
local function where()
    if sock_port then
        return sock_host .. ":" .. sock_port
    end
    return sock_host
end


-- The sidecar's state, shared by all workers: up unless DOWN_KEY is set.
-- The first request that cannot reach the sidecar sets it (and that worker
-- logs the outage once); from then on no request is sent. Instead, every
-- handshake that would ask probes the address with refused(), which is
-- silent and does not wait, so that the first handshake after the
-- sidecar's return ends the outage (logged once) and asks. When an outage
-- starts within 5 s of a probe that ended the last one, the probe was
-- wrong (an address it cannot judge, such as a TCP address on another
-- host, or a sidecar that accepts connections but does not answer): then
-- probes are spaced, one worker at a time, by an interval from PROBE_FLAP
-- doubling up to PROBE_MAX, so that the requests that follow a wrong
-- probe, which nginx may log, stay a few a minute.

-- slow(err) counts a request that connected but got no answer in time (a
-- timeout, err). One is the name's problem (a slow lookup): the caller
-- holds what it has for error_ttl. SLOW_LIMIT in a row in this worker,
-- with no answer between, mark the sidecar down: it accepts connections
-- but does not answer. (Counted per worker: a count in the shared dict
-- would take room, and could evict a certificate, when it is full.)
local mark_down
local function slow(err)
    slow_in_row = slow_in_row + 1
    if slow_in_row >= SLOW_LIMIT then
        slow_in_row = 0
        mark_down(err .. ", " .. SLOW_LIMIT .. " requests in a row")
    end
end


-- mark_down(err) records that a request could not reach the sidecar.
mark_down = function (err)
    local now = ngx_now()
    local interval = 0
    if certs:get(BACK_KEY) then
        interval = math_min(math_max((tonumber(certs:get(FLAP_KEY)) or 0) * 2,
                                     PROBE_FLAP), PROBE_MAX)
    end
    local ok = certs:add(DOWN_KEY, str_format("%.3f %.3f %.3f",
                                              now + interval, interval, now))
    if ok then
        if interval > 0 then
            certs:set(FLAP_KEY, interval, 120)
        end
        ngx_log(ERR, "certserver: sidecar at ", where(), " unreachable (",
                err, "); serving cached certificates and the fallback, "
                .. "and probing it, until it answers")
    end
end


-- sidecar_down() tells whether requests must not be sent now. When a probe
-- is due and no other worker probes, this one probes.
local function sidecar_down()
    local v = certs:get(DOWN_KEY)
    if not v then
        return false
    end
    local now = ngx_now()
    local next_at, interval, since = str_match(v, "^(%S+) (%S+) (%S+)$")
    next_at, interval, since = tonumber(next_at), tonumber(interval),
                               tonumber(since)
    if not (next_at and interval and since) then
        certs:delete(DOWN_KEY)
        return false
    end
    local locked = interval > 0
    if now < next_at
       or locked and not locks:add(PROBE_KEY, true, lock_timeout)
    then
        return true
    end
    local down = refused(sock_host, sock_port)
    if down then
        if locked then
            certs:set(DOWN_KEY, str_format("%.3f %.3f %.3f", now + interval,
                                           interval, since))
        end
    else
        certs:delete(DOWN_KEY)
        certs:set(BACK_KEY, true, 5)
        ngx_log(WARN, "certserver: sidecar at ", where(), " accepts ",
                "connections again after ", str_format("%.1f", now - since),
                " s")
    end
    if locked then
        locks:delete(PROBE_KEY)
    end
    return down
end


-- hold(entry) keeps serving entry, stale, without looking again for
-- error_ttl: while the sidecar is not asked, nothing newer can come.
local function hold(entry)
    if entry then
        entry.fresh_until = ngx_now() + error_ttl
    end
    return entry
end


-- wildcard_of(name) is the wildcard pattern one label up, or nil.
local function wildcard_of(name)
    local dot = str_find(name, ".", 1, true)
    if dot then
        return "*" .. str_sub(name, dot)
    end
    return nil
end


-- store_record(id, version, body, exptime, moved) puts a record's PEM in
-- the shared dict, unless it holds this version already: then it only
-- extends its life (no allocation, so nothing is evicted by a name that
-- maps to a record already cached). With moved (the answer may predate a
-- change) it never replaces another version: it returns false, "newer".
local function store_record(id, version, body, exptime, moved)
    local key = RECORD_PREFIX .. id
    local cur = certs:get(key)
    if cur and str_sub(cur, 1, #version + 1) == version .. "\n" then
        if certs.expire then
            certs:expire(key, exptime)
        end
        return true
    end
    if moved then
        if cur then
            return false, "newer"
        end
        local ok, err = certs:add(key, version .. "\n" .. body, exptime)
        if not ok and err == "exists" then
            return false, "newer"
        end
        return ok, err
    end
    return certs:set(key, version .. "\n" .. body, exptime)
end


-- leaf_content(res) is the record content (see RECORD_PREFIX) of an
-- answer in the leaf format, and the digests of its intermediates; or nil,
-- nil, what is wrong with it.
local function leaf_content(res)
    local kd = res.key_digest
    if not chain_push then
        return nil, nil, "leaf format without OpenSSL's functions at hand"
    end
    if not (kd and #kd == 64 and str_find(kd, "^[0-9a-f]+$")) then
        return nil, nil, "no valid key digest"
    end
    local digests = {}
    for d in str_gmatch(res.chain or "", "%S+") do
        if #d ~= 64 or not str_find(d, "^[0-9a-f]+$") then
            return nil, nil, "malformed intermediate digest"
        end
        digests[#digests + 1] = d
    end
    local meta = LEAF_MARK .. kd
    if #digests > 0 then
        meta = meta .. " " .. table_concat(digests, " ")
    end
    return meta .. "\n" .. res.body, digests, nil
end


-- fetch_intermediate(d) asks the sidecar for the intermediate of digest
-- d (GET /v1/chains/{digest}), parses it into the worker's table and puts
-- it in the shared dict for the other workers, with no expiry: a digest's
-- content never changes. Returns true, or nil, err, why as fetch does
-- (BAD_ANSWER for a status other than 200 or a certificate of another
-- digest).
local function fetch_intermediate(d)
    local t0 = clock()
    local res, err, why = fetch(CHAINS_PATH .. d, MAX_BODY)
    if not res then
        return nil, err, why
    end
    stat("chain_fetch", t0)
    if res.status ~= 200 then
        return nil, "sidecar answered " .. res.status .. " for intermediate "
                    .. d, BAD_ANSWER
    end
    local x
    x, err = load_intermediate(d, res.body)
    if not x then
        return nil, err, BAD_ANSWER
    end
    local ok
    ok, err = certs:set(CHAIN_PREFIX .. d, res.body)
    if not ok then
        log_limited("shared", "cannot cache intermediate " .. d
                              .. " in the shared dict: " .. tostring(err))
    end
    return true
end


-- fetch_intermediates(digests, lock_until) makes sure the worker holds
-- every intermediate of digests parsed: from its own table, else the
-- shared dict, else the sidecar, one request per intermediate across all
-- workers (a lock in lock_dict; the others wait for its answer in the
-- shared dict). lock_until (by ngx.now()) is when the caller's fetch lock
-- of its name expires: a wait for another worker's answer ends in time
-- for a request of its own before then, so that lock_timeout still
-- bounds a name's first fetch (the handshakes waiting on the name give
-- up then). Returns true, or nil, err, why as fetch_intermediate.
local function fetch_intermediates(digests, lock_until)
    for _, d in ipairs(digests) do
        if not (intermediates[d] or intermediate(d)) then
            local key = CHAIN_PREFIX .. d
            local ok, err, why
            if locks:add(key, true, lock_timeout) then
                local done, r1, r2, r3 = pcall(fetch_intermediate, d)
                locks:delete(key)
                if not done then
                    error(r1, 0)
                end
                ok, err, why = r1, r2, r3
            else
                -- Another worker asks the sidecar: wait for its answer,
                -- leaving room for a request of our own.
                local deadline = math_min(ngx_now() + lock_timeout,
                    lock_until - (connect_timeout + read_timeout) / 1000)
                local delay = 0.001
                while ngx_now() < deadline and locks:get(key) do
                    ngx_sleep(math_min(delay, deadline - ngx_now()))
                    delay = math_min(delay * 2, 0.02)
                end
                ok = intermediate(d) ~= nil
                if not ok then
                    ok, err, why = fetch_intermediate(d)
                end
            end
            if not ok then
                return nil, err, why
            end
        end
    end
    return true
end


-- Fetches name from the sidecar and caches the answer. cur is what the
-- caches hold (or nil); lock_until (by ngx.now()) is when the caller's
-- fetch lock of name expires. Returns the entry to serve, or nil.
local function refresh(name, cur, lock_until)
    local feed_before = certs:get(FEED_KEY)
    local t0 = clock()
    local res, err, why = fetch(CERTS_PATH .. name, MAX_BODY)
    if res then
        stat("fetch", t0)
    end
    local now = ngx_now()
    local status = res and res.status
    local max_age = res and res.max_age and math_min(res.max_age, MAX_AGE)
    local moved = certs:get(FEED_KEY) ~= feed_before
    if moved then
        -- Changes were applied while the answer was on its way: it may
        -- predate one of them, and be written after its drop. Keep it
        -- only until the next poll's worth; and a certificate must not
        -- replace another copy of its record (see store_record).
        max_age = math_min(max_age or FEED_INTERVAL, FEED_INTERVAL)
    end

    if status == 200 and res.leaf then
        -- The leaf format: the leaf and key, and the intermediates by
        -- digest, which this nginx may hold already. A record whose
        -- intermediates cannot be had is not served: never an incomplete
        -- chain.
        local content, digests
        content, digests, err = leaf_content(res)
        if content then
            local ok
            ok, err, why = fetch_intermediates(digests, lock_until)
            if ok then
                res.body = content
            else
                status = nil
                if why ~= SLOW and why ~= UNANSWERED then
                    why = BAD_ANSWER
                end
            end
        else
            status = nil
            why = BAD_ANSWER
        end
    end

    if status == 200 then
        max_age = max_age or DEFAULT_MAX_AGE
        local body = res.body
        local version = ngx_md5(body)
        local id = res.record
        if not (id and str_find(id, "^[%w.*-]+$")) then
            id = name  -- a sidecar that does not say which record
        end
        -- Served through the wildcard one label up? The sidecar says which
        -- stored name matched; one that does not is taken at its record.
        local wild = wildcard_of(name)
        if res.match then
            wild = res.match == wild and wild
        else
            wild = id == wild and wild
        end
        local rec
        rec, err = worker_record(id, version, body, not moved)
        if not rec then
            log_limited("response", "bad answer for " .. name .. ": " .. err)
            certs:safe_set(BAD_PREFIX .. name, true, error_ttl)
            return hold(cur)
        end
        local entry = new_entry(now + max_age, now, rec, wild and true)
        local exptime = 0
        if max_stale > 0 then
            exptime = max_age + max_stale
        end
        local ok
        ok, err = store_record(id, version, body, exptime, moved)
        if err == "newer" then
            -- Another worker cached a copy of the record, perhaps fetched
            -- after the drop this answer predates: serve this handshake
            -- only, not every other name of the record, for up to its
            -- max-age.
            return entry
        end
        if ok then
            -- A name served through its wildcard takes only free room: a
            -- flood of random subnames must not push certificates out.
            local value = encode_name(entry.fresh_until, now, id, wild)
            if wild then
                if certs:get(WILD_PREFIX .. wild) ~= id then
                    certs:set(WILD_PREFIX .. wild, id)
                end
                ok = certs:safe_set(name, value, exptime)
                if not ok then
                    certs:delete(name)  -- no older answer may outlive this
                    ok = true
                end
            else
                ok, err = certs:set(name, value, exptime)
            end
        end
        if not ok then
            log_limited("shared", "cannot cache " .. name .. " in the shared "
                                  .. "dict: " .. tostring(err))
        end
        remember(name, entry)
        return entry
    end

    if status == 404 or status == 400 then
        local ttl = negative_ttl
        if status == 400 then
            ttl = invalid_ttl
        end
        if max_age and max_age < ttl then
            ttl = max_age
        end
        local entry = new_entry(now + ttl, now, nil)
        if ttl > 0 then
            -- safe_set: a negative answer takes only free room, never a
            -- certificate's (a flood of unknown names would evict them).
            local ok = certs:safe_set(name,
                                      encode_name(entry.fresh_until, now,
                                                  NEGATIVE), ttl)
            if not ok then
                certs:delete(name) -- no stale certificate may outlive the 404
            end
        else
            certs:delete(name)
        end
        remember(name, entry)
        return entry
    end

    if status then
        log_limited("response", "sidecar answered " .. status .. " for "
                                .. name)
        certs:safe_set(BAD_PREFIX .. name, true, error_ttl)
        return hold(cur)
    end
    if why == BAD_ANSWER then
        log_limited("response", "bad answer for " .. name .. ": " .. err)
        certs:safe_set(BAD_PREFIX .. name, true, error_ttl)
        return hold(cur)
    end
    if why == SLOW then
        log_limited("response", "sidecar gave no answer for " .. name
                                .. ": " .. err)
        certs:safe_set(BAD_PREFIX .. name, true, error_ttl)
        slow(err)
        return hold(cur)
    end

    mark_down(err)
    return hold(cur)
end


-- valid_name(name) mirrors the sidecar's check of a host name
-- (store/hostname) on a lowercased name without a trailing dot, so that
-- what the sidecar would refuse is not asked about at all. It never
-- refuses a name the sidecar accepts; it accepts a few the sidecar
-- refuses (an xn-- label that does not decode, a single label), which
-- cost one request answered 400. store/hostname/testdata/names.tsv holds
-- both checks to this.
local function valid_name(name)
    local n = #name
    if n == 0 or n > 253 or str_find(name, "[^a-z0-9.-]") then
        return false
    end
    local start = 1
    while true do
        local dot = str_find(name, ".", start, true)
        local last = (dot or n + 1) - 1
        local len = last - start + 1
        if len < 1 or len > 63 or str_byte(name, start) == HYPHEN
           or str_byte(name, last) == HYPHEN then
            return false
        end
        if len >= 4 and str_byte(name, start + 2) == HYPHEN
           and str_byte(name, start + 3) == HYPHEN
           and str_sub(name, start, start + 3) ~= "xn--" then
            return false
        end
        if not dot then
            -- the last label: not all digits (an IPv4 address, or no TLD)
            return str_find(name, "[^0-9]", start) ~= nil
        end
        start = dot + 1
    end
end


-- Exported for the test that holds it to store/hostname's table of names.
_M.valid_name = valid_name


-- lock_seq numbers this worker's fetch locks, so that a lock that outlived
-- lock_timeout and was taken by another worker is not deleted as ours.
local lock_seq = 0


-- through_wildcard(name) serves, while the sidecar cannot be asked or
-- fails for the name, the cached record of the wildcard one label up for
-- a name the caches hold nothing for: it covers the name, where the
-- fallback covers nothing.
local function through_wildcard(name)
    local wild = wildcard_of(name)
    if not wild then
        return nil
    end
    local rec = load_record(certs:get(WILD_PREFIX .. wild) or wild)
    if rec then
        return new_entry(ngx_now() + error_ttl, 0, rec, true)
    end
    return nil
end


-- The slow path: the LRU entry cur is missing, stale or retired. Returns
-- the entry to serve (possibly stale or negative) or nil.
local function lookup(name, cur)
    if not valid_name(name) then
        return nil
    end
    if not (certs and locks) then
        log_limited("config", "lua_shared_dict for certserver is missing; "
                              .. "see nginx/certserver-http.conf")
        return cur
    end
    if cur and cur.rec and cur.rec.dropped then
        cur = nil  -- replaced or removed: never served again
    end

    local entry = load_shared(name, cur)
    if entry and entry.fresh_until > ngx_now() then
        return entry
    end

    if sidecar_down() then
        return hold(entry) or through_wildcard(name)
    end
    if certs:get(BAD_PREFIX .. name) then
        return hold(entry) or through_wildcard(name)
    end

    lock_seq = lock_seq + 1
    local token = ngx_worker_pid() .. ":" .. lock_seq
    local lock_until = ngx_now() + lock_timeout
    local ok, err = locks:add(name, token, lock_timeout)
    if ok then
        local res
        ok, res = pcall(refresh, name, entry, lock_until)
        -- Ours unless it expired and another worker took it meanwhile.
        if locks:get(name) == token then
            locks:delete(name)
        end
        if not ok then
            log_limited("internal", "internal error: " .. tostring(res))
            return hold(entry)
        end
        if not res then
            -- The sidecar failed (down, slow, a bad answer): a cached
            -- wildcard covers the name, where the fallback covers nothing.
            return through_wildcard(name)
        end
        return res
    end
    if err ~= "exists" then
        log_limited("lock", "cannot lock " .. name .. ": " .. tostring(err))
        return hold(entry)
    end

    -- Another worker is asking the sidecar. Serve what we have, else wait
    -- for its answer.
    if entry and entry.rec then
        return entry
    end
    local deadline = ngx_now() + lock_timeout
    local delay = 0.001
    repeat
        ngx_sleep(delay)
        if not locks:get(name) then
            break
        end
        delay = math_min(delay * 2, 0.02)
    until ngx_now() >= deadline
    return load_shared(name, entry)
end


-- The change feed. Each worker asks the sidecar every FEED_INTERVAL
-- seconds, from a timer started by its first handshake, for the names
-- whose certificate was stored, replaced or deleted since the last answer
-- (GET /v1/changes?marks=1&since=EPOCH.VERSION) and retires them: from
-- the shared dict (the name and the record of that id) and from its own
-- LRU, and every name the worker serves through a retired record. When
-- the sidecar cannot tell (the worker fell too far behind, or the store
-- is another one) everything cached before is revalidated: served on,
-- stale, while its name is asked again. No poll while the sidecar is
-- down; the poll probes it instead.
--
-- The sidecar marks a name that no certificate serves any more (deleted,
-- or no longer in any certificate, and no wildcard of it stored): such a
-- name is dropped at once, pre-warming on or off, and taken out of the
-- pre-warm queue (see unqueue), so that a removed certificate is gone
-- within about a second even during a wave of renewals.
--
-- Pre-warming (option prewarm, on by default): a changed name this
-- worker serves a certificate for is not dropped from its LRU but queued;
-- one timer per worker works through the queue, one name at a time and
-- resting between names (see prewarm_run), and for each fetches the new
-- answer and parses it off the handshake path (through refresh, as a
-- handshake would), then swaps it in. Meanwhile the old certificate is
-- served, its max-age held over (see hold_over): a renewal leaves it
-- valid, and is never urgent, so a wave is worked through at
-- PREWARM_SHARE of the worker's time (see prewarm_rest). A 404 replaces
-- it with the fallback (should the feed not have said the name is
-- gone); a name moved to another record follows it. One worker fetches
-- a name (the fetch lock of lookup); it then marks the shared
-- copy as fetched after the change (PREWARM_KEY), and the other workers
-- parse that copy in their own timer instead of asking. A name whose
-- pre-warming fails, or that waited prewarm_wait seconds in the queue, is
-- left to its next handshake, as without pre-warming (see give_up).

local feed_cursor    -- "<epoch> <version>" this worker applied, or nil
local feed_off_until = 0
local feed_started = false
local feed_polling = false  -- a poll is under way (it may outlast a tick)

-- "!pw:" .. name: the shared cursor ("<epoch> <version>") as of which the
-- shared dict's copy of name was fetched by a pre-warm; set with
-- safe_set, for PREWARM_MARK seconds
local PREWARM_KEY = "!pw:"
local PREWARM_MARK = 60
local PREWARM_REST = 0.01   -- the least rest after a name, at most (s)
local PREWARM_SHARE = 1 / 32 -- the pre-warm's share of a worker's time
local PREWARM_SPREAD = 0.5   -- of prewarm_wait: a queue's time to finish
local PREWARM_SLICE = 0.1   -- the longest sleep of a rest (s)
-- A line of the feed naming a name no certificate serves: "gone NAME"
-- (certserver.GoneMark); no host name holds a space.
local GONE_LINE = "^gone (%S+)$"
local FEED_CHUNK = 100      -- names a poll applies between two yields
-- The shortest sleep of the pre-warm and the feed (s): ngx_lua built
-- without OpenResty's delayed-events patch (Debian's) warns of every
-- ngx.sleep under 1 ms ("ngx.sleep(0) called without delayed events
-- patch").
local SLEEP_MIN = 0.001


-- covers(mark, cursor) tells whether the cursor mark ("<epoch>
-- <version>", or nil) is cursor or later in the same epoch.
local function covers(mark, cursor)
    if not mark then
        return false
    end
    local m_epoch, m_version = str_match(mark, "^(%S+) (%d+)$")
    local c_epoch, c_version = str_match(cursor, "^(%S+) (%d+)$")
    return m_epoch ~= nil and m_epoch == c_epoch
           and tonumber(m_version) >= tonumber(c_version)
end


-- unshare(name, cursor) deletes the shared dict's copies of name, the
-- name changed as of cursor (nil: unknown), unless a pre-warm fetched
-- them after that change.
local function unshare(name, cursor)
    if cursor and covers(certs:get(PREWARM_KEY .. name), cursor) then
        return
    end
    certs:delete(name)
    certs:delete(RECORD_PREFIX .. name)
    certs:delete(WILD_PREFIX .. name)
end


-- drop(name, cursor) retires name, changed as of cursor (or nil), in the
-- shared dict (see unshare) and in this worker: its LRU entries, and the
-- record of that id, with every name served through it.
local function drop(name, cursor)
    unshare(name, cursor)
    forget(name)
    local rec = records[name]
    if rec then
        rec.dropped = true
        records[name] = nil
    end
end


-- held(name) tells whether this worker serves name a certificate worth
-- pre-warming: name is in its LRU with one, or is the id of a record it
-- holds (then fetching name brings the record's new version, which its
-- other names follow). A wildcard's record is dropped instead: no name
-- to ask for it by.
local function held(name)
    local entry = lru:get(name)
    if entry and entry.rec and not entry.rec.dropped then
        return true
    end
    local rec = records[name]
    return rec ~= nil and not rec.dropped and valid_name(name)
end


-- The pre-warm queue: names from pw_first to pw_last; pw_jobs[name] is
-- { cursor = <the feed cursor it changed as of>, at = <when queued, by
-- clock()> } while it waits. A place whose name has no job was taken out
-- (see unqueue) and is skipped; pw_queued counts the jobs, which is what
-- the queue's length means to its bound (enqueue) and its pace
-- (prewarm_rest).
local pw_names = {}
local pw_first, pw_last = 1, 0
local pw_jobs = {}
local pw_queued = 0
local pw_running = false


-- hold_over(name) keeps the worker's entry of name, just queued for
-- pre-warming, fresh until the pre-warm may give up on it (prewarm_wait
-- from now; see give_up, which makes it stale): a max-age that lapses
-- while the name waits would otherwise send its next handshake to the
-- sidecar and to a parse, which the pre-warm is there to spare. The
-- sidecar answers a certificate due for renewal with a short max-age
-- (10 s by default), so in a wave most would lapse. Never past the
-- leaf's notAfter (nor at all when that cannot be told): the next
-- handshake after that, or after its max-age if later, asks for the
-- renewal, as without pre-warming, and is not served an expired leaf.
local function hold_over(name)
    local entry = lru:get(name)
    local ttl = entry and entry.rec and leaf_ttl(entry.rec.chain)
    if not ttl or ttl <= 0 then
        return
    end
    local deadline = ngx_now() + math_min(prewarm_wait, ttl)
    if entry.fresh_until < deadline then
        entry.fresh_until = deadline
    end
end


-- enqueue(name, cursor, now) queues name for pre-warming (now by
-- clock()) and holds its entry over (see hold_over); false when the
-- queue is full (lru_size names).
local function enqueue(name, cursor, now)
    local job = pw_jobs[name]
    if job then
        job.cursor = cursor  -- changed again: keeps its place
        return true
    end
    if pw_queued >= lru_size then
        return false
    end
    pw_last = pw_last + 1
    pw_names[pw_last] = name
    pw_jobs[name] = { cursor = cursor, at = now }
    pw_queued = pw_queued + 1
    hold_over(name)
    return true
end


-- wait_unlocked(name) waits, at most lock_timeout, until nobody holds
-- the fetch lock of name.
local function wait_unlocked(name)
    local deadline = ngx_now() + lock_timeout
    local delay = 0.001
    repeat
        ngx_sleep(delay)
        if not locks:get(name) then
            return
        end
        delay = math_min(delay * 2, 0.02)
    until ngx_now() >= deadline
end


-- give_up(name, cursor) leaves name, changed as of cursor, to its next
-- handshake, as without pre-warming: the worker's entry is made stale, so
-- that the handshake looks again and, should the sidecar fail, serves it
-- meanwhile as any cached certificate (the shared dict's copy is gone,
-- see poll_changes); without an entry, name is dropped.
local function give_up(name, cursor)
    local cur = lru:get(name)
    if cur and cur.rec and not cur.rec.dropped then
        cur.fresh_until = 0
        return
    end
    drop(name, cursor)
end


-- requeue(name, job) puts name back at the end of the pre-warm queue.
local function requeue(name, job)
    job.requeued = true
    pw_last = pw_last + 1
    pw_names[pw_last] = name
    if not pw_jobs[name] then  -- else queued again meanwhile: one job
        pw_queued = pw_queued + 1
    end
    pw_jobs[name] = job
end


-- unqueue(name) takes name out of the pre-warm queue: its place stays,
-- without a job, and is skipped (see prewarm_run). Queued again, name
-- takes the first of its places.
local function unqueue(name)
    if pw_jobs[name] then
        pw_jobs[name] = nil
        pw_queued = pw_queued - 1
    end
end


-- prewarm_one(name, job) brings this worker's copy of name up to date
-- after the change job.cursor announced, off the handshake path: from
-- the shared dict when a pre-warm in another worker fetched it after
-- that change, else from the sidecar under the name's fetch lock (as
-- lookup takes it), through refresh. A name another worker is fetching
-- goes to the end of the queue once, instead of being waited for: the
-- workers, which queue a wave in the same order, then fetch every other
-- name each and take the rest from the shared dict, with no wake-ups to
-- see whether the other is done. Whatever fails, the next handshake
-- asks (see give_up).
local function prewarm_one(name, job)
    if not job.requeued then
        stat("prewarm_wait", job.at)
    end
    local t0 = clock()
    if t0 - job.at > prewarm_wait or sidecar_down() then
        give_up(name, job.cursor)
        stat("prewarm_dropped", t0)
        return
    end
    local function from_shared()
        if covers(certs:get(PREWARM_KEY .. name), job.cursor)
           and load_shared(name, nil)
        then
            stat("prewarm_loaded", t0)
            return true
        end
        return false
    end
    for _ = 1, 2 do
        if from_shared() then
            return
        end
        lock_seq = lock_seq + 1
        local token = ngx_worker_pid() .. ":" .. lock_seq
        local lock_until = ngx_now() + lock_timeout
        local ok, err = locks:add(name, token, lock_timeout)
        -- Another worker may have fetched it between the two: it marks
        -- the shared copy before it unlocks.
        if ok and from_shared() then
            if locks:get(name) == token then
                locks:delete(name)
            end
            return
        end
        if ok then
            local before = certs:get(FEED_KEY)
            local cur = lru:get(name) or churn:get(name)
            local res
            ok, res = pcall(refresh, name, cur, lock_until)
            local kept = ok and res and res ~= cur
                         and (lru:get(name) or churn:get(name)) == res
            if kept and before then
                -- A new answer, in this worker's LRU and the shared
                -- dict: marked before the lock goes (see above).
                certs:safe_set(PREWARM_KEY .. name, before, PREWARM_MARK)
            end
            if locks:get(name) == token then
                locks:delete(name)
            end
            if kept then
                stat("prewarm_fetched", t0)
                return
            end
            if not ok then
                log_limited("internal", "internal error: " .. tostring(res))
            end
            break  -- the sidecar failed, or the answer was not kept
        end
        if err ~= "exists" then
            log_limited("lock", "cannot lock " .. name .. ": "
                                .. tostring(err))
            break
        end
        -- Another worker (or a handshake) is fetching name: take its
        -- answer when it is done, after the rest of the queue the first
        -- time.
        if not job.requeued then
            requeue(name, job)
            stat("prewarm_requeued", t0)
            return
        end
        wait_unlocked(name)
    end
    give_up(name, job.cursor)
    stat("prewarm_dropped", t0)
end


-- prewarm_rest(took) is how long the pre-warm timer rests after a name
-- that took `took` seconds: long enough that pre-warming takes
-- PREWARM_SHARE of the worker's time, unless the queue would then not be
-- through within PREWARM_SPREAD of prewarm_wait of its oldest name's
-- arrival; then as long as that leaves, but never less than the name
-- took (at most PREWARM_REST), nor than SLEEP_MIN: pre-warming takes at
-- most about half of a busy worker's time. Only while names are queued.
local function prewarm_rest(took)
    local left = math_max(pw_queued, 1)
    local rest = took * (1 / PREWARM_SHARE - 1)
    local head = pw_jobs[pw_names[pw_first]]
    if head then
        local fit = (head.at + prewarm_wait * PREWARM_SPREAD - clock()) / left
                    - took
        rest = math_min(rest, fit)
    end
    return math_max(rest, math_min(took, PREWARM_REST), SLEEP_MIN)
end


-- prewarm_sleep(s) rests s seconds, in slices of at most PREWARM_SLICE,
-- and returns as soon as the worker is told to exit: a sleep in a timer
-- cannot be cut short, and one of seconds (prewarm_rest's, with a long
-- queue) held up the worker's graceful exit, and its memory, as long.
local function prewarm_sleep(s)
    while s > 0 and not ngx_worker_exiting() do
        local d = math_max(math_min(s, PREWARM_SLICE), SLEEP_MIN)
        ngx_sleep(d)
        s = s - d
    end
end


-- prewarm_run is the worker's pre-warm timer: it works through the
-- queue one name at a time until it is empty (or the worker exits:
-- then it empties it), and after each name rests (see prewarm_rest), so
-- that a handshake waits behind one parse of its worker's pre-warming
-- at most, and a wave of renewals is spread out instead of taking the
-- worker's time in a burst. (Names in parallel put their parses in the
-- same turn of the event loop, and each handshake, which needs a few
-- turns, waits for all of them each time: with 4 at once, handshake p99
-- during a wave of 200 renewals was 3-7 times that with pre-warming
-- off. One at a time at an eighth of the worker, through within 2.5 s,
-- a wave of 1,000 took about a fifth of each worker for 3 s on a 2-CPU
-- machine its handshake clients kept busy, and every handshake queued
-- behind it; at a 32nd, over up to a minute, the p99 of the seconds
-- after the renewal stays that of the seconds before it within noise;
-- see BenchmarkRenewalWave and the README's Performance section.)
local function prewarm_run(premature)
    while pw_first <= pw_last do
        if premature or ngx_worker_exiting() then
            -- A draining worker serves no more handshakes: what is
            -- queued is of no use, and a long queue would delay its exit.
            for i = pw_first, pw_last do
                pw_jobs[pw_names[i]] = nil
                pw_names[i] = nil
            end
            pw_queued = 0
            break
        end
        local name = pw_names[pw_first]
        pw_names[pw_first] = nil
        pw_first = pw_first + 1
        local job = pw_jobs[name]
        pw_jobs[name] = nil
        if job then  -- else taken out of the queue (see unqueue)
            pw_queued = pw_queued - 1
            local t0 = clock()
            local ok, err = pcall(prewarm_one, name, job)
            if not ok then
                log_limited("internal", "internal error: " .. tostring(err))
                give_up(name, nil)
            end
            -- Places taken out of the queue need no rest, and count in
            -- none (pw_queued).
            while pw_first <= pw_last and not pw_jobs[pw_names[pw_first]] do
                pw_names[pw_first] = nil
                pw_first = pw_first + 1
            end
            if pw_first <= pw_last then
                prewarm_sleep(prewarm_rest(clock() - t0))
            end
        end
    end
    pw_first, pw_last, pw_queued = 1, 0, 0
    pw_running = false
end


-- start_prewarm() starts the pre-warm timer unless it runs; when it
-- cannot, the queued names are left to their next handshakes.
local function start_prewarm()
    if pw_running or pw_first > pw_last then
        return
    end
    local ok, err = ngx_timer_at(0, prewarm_run)
    if ok then
        pw_running = true
        return
    end
    log_limited("feed", "cannot start the pre-warm timer: " .. tostring(err))
    for i = pw_first, pw_last do
        local name = pw_names[i]
        pw_names[i] = nil
        local job = pw_jobs[name]
        if job then
            give_up(name, job.cursor)
            pw_jobs[name] = nil
            stat("prewarm_dropped", clock())
        end
    end
    pw_first, pw_last, pw_queued = 1, 0, 0
end


local function poll_changes()
    if not (certs and locks) or sidecar_down() then
        return
    end
    local t0 = clock()
    local now = ngx_now()
    if now < feed_off_until then
        return
    end
    local shared = certs:get(FEED_KEY)
    local cursor = feed_cursor
    if not cursor and shared then
        -- This worker's first poll: take up where the others are. What
        -- its first handshakes cached may have changed since, and the
        -- others dropped that only from the shared dict.
        lru:flush_all()
        churn:flush_all()
        cursor = shared
    end
    local since = ""
    if cursor then
        since = str_match(cursor, "^(%S+) ") .. "."
                .. str_match(cursor, " (%S+)$")
    end
    local res, err, why = fetch(CHANGES_PATH .. since, MAX_FEED_BODY)
    if not res then
        if why == BAD_ANSWER then
            log_limited("feed", "bad answer from the change feed: " .. err)
        elseif why == SLOW then
            log_limited("feed", "no answer from the change feed: " .. err)
            slow(err)
        else
            mark_down(err)
        end
        return
    end
    if res.status == 404 then
        -- A sidecar without the feed: certificates change at their max-age.
        feed_off_until = now + 60
        return
    end
    stat("feed_poll", t0)
    local body = res.body
    local epoch, version = str_match(body, "^(%S+) (%d+)\n")
    if res.status ~= 200 or not epoch then
        log_limited("feed", "bad answer from the change feed: status "
                            .. res.status)
        return
    end
    local next_cursor = epoch .. " " .. version
    local rest = str_sub(body, #next_cursor + 2)
    -- The shared cursor moves first, so that a fetch under way while the
    -- names are dropped sees that it may be out of date (see refresh).
    if shared ~= next_cursor then
        local sh_epoch, sh_version = str_match(shared or "", "^(%S+) (%d+)$")
        if sh_epoch ~= epoch or tonumber(sh_version) < tonumber(version) then
            certs:set(FEED_KEY, next_cursor)
        end
    end
    if rest == "reset\n" then
        -- What changed since the cursor is not known (nginx fell behind,
        -- the store is another one; or this is nginx's first poll, and
        -- what the first handshakes fetched may have changed since). The
        -- first worker to learn of it marks what the shared dict holds as
        -- stale; each empties its own LRU, whose entries then come from
        -- the shared dict, stale. When another worker has moved the shared
        -- cursor on in this epoch, the shared dict is in order already.
        if not shared or shared == cursor
           or str_match(shared, "^(%S+) ") ~= epoch
        then
            certs:set(REVAL_KEY, now)
        end
        lru:flush_all()
        churn:flush_all()
    else
        -- A wave of changes is applied FEED_CHUNK names at a time, the
        -- worker's handshakes served in between.
        local n = 0
        for line in str_gmatch(rest, "[^\n]+") do
            local gone = str_match(line, GONE_LINE)
            if gone then
                -- No certificate any more: nothing to pre-warm. Dropped
                -- as a record id too: names served through a record of
                -- that id (which may still serve others) ask again at
                -- their next handshake, a refetch at most.
                unqueue(gone)
                drop(gone, next_cursor)
                stat("feed_gone", clock())
            elseif prewarm and held(line) and enqueue(line, next_cursor, t0)
            then
                unshare(line, next_cursor)
            else
                drop(line, next_cursor)
            end
            n = n + 1
            if n % FEED_CHUNK == 0 then
                local y = clock()
                ngx_sleep(SLEEP_MIN)
                stat("feed_yield", y)
            end
        end
        start_prewarm()
    end
    feed_cursor = next_cursor
end


local function feed_tick(premature)
    if premature or ngx_worker_exiting() or feed_polling then
        return
    end
    feed_polling = true
    local ok, err = pcall(poll_changes)
    feed_polling = false
    if not ok then
        log_limited("internal", "internal error: " .. tostring(err))
    end
end


-- start_feed starts the worker's feed timer; a handshake tries again
-- while it cannot (too many pending timers).
local function start_feed()
    local ok, err = ngx_timer_every(FEED_INTERVAL, feed_tick)
    if not ok then
        log_limited("feed", "cannot start the change feed's timer: "
                            .. tostring(err))
        return
    end
    feed_started = true
end


local function install(name, rec)
    local ok, err = ssl_clear_certs()
    if ok then
        ok, err = ssl_set_cert(rec.chain)
    end
    if ok then
        ok, err = ssl_set_priv_key(rec.key)
    end
    if not ok then
        log_limited("install", "cannot set the certificate for " .. name
                               .. ": " .. tostring(err))
        return false
    end
    return true
end


-- Handler for ssl_certificate_by_lua*. Serves the certificate the sidecar
-- has for the client's SNI; leaves nginx's own ssl_certificate (the
-- fallback) in place when there is none, when there is no SNI, or on any
-- failure. Never raises; logs its own errors (rate-limited). Returns true
-- when it set a certificate, false when the fallback is served. Its first
-- call in a worker starts the worker's change feed timer.
function _M.ssl_certificate()
    if not feed_started then
        start_feed()
    end
    local name = ssl_server_name()
    if not name then
        return false
    end
    name = str_lower(name)
    if str_byte(name, -1) == DOT then
        name = str_sub(name, 1, -2)
    end

    local entry = lru:get(name) or churn:get(name)
    if not entry or entry.fresh_until <= ngx_now()
       or entry.rec and entry.rec.dropped
    then
        local ok, res = pcall(lookup, name, entry)
        if not ok then
            log_limited("internal", "internal error: " .. tostring(res))
            res = nil
        end
        entry = res
        if entry and entry.stale_until <= ngx_now() then
            entry = nil
        end
    end

    if entry and entry.rec then
        return install(name, entry.rec)
    end
    return false
end


return _M
