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
-- How a handshake finds its certificate, cheapest first:
--
--  1. A per-worker LRU cache of parsed certificate chains and keys (cdata),
--     keyed by the normalized SNI. A fresh hit costs no I/O, no lock and no
--     parsing.
--  2. The lua_shared_dict `shared_dict`, shared by all workers, holding the
--     PEM the sidecar sent with its freshness deadline and a version (the
--     MD5 of the PEM). A worker whose LRU copy went stale re-parses only when
--     the version changed.
--  3. The sidecar, `GET /v1/certs/{name}` over HTTP/1.1 on `socket`. At most
--     one request per name is in flight across all workers (a lock in
--     `lock_dict`); other handshakes for that name serve their stale copy
--     if they have one, else wait for the request to finish.
--
-- What the sidecar answers:
--
--  * 200: the PEM chain (leaf first) then the PEM private key, fresh for the
--    `Cache-Control: max-age=N` seconds (60 when the header is missing). The
--    shared copy is kept `max_stale` seconds longer, to be served while the
--    sidecar cannot be reached.
--  * 404: no certificate for the name. nginx's own ssl_certificate (the
--    fallback) is served and the answer is remembered for its max-age, at
--    most `negative_ttl` seconds.
--    A 404 is authoritative: it replaces a cached certificate for the name,
--    so a removed certificate stops being served within that certificate's
--    max-age.
--  * 400: the sidecar refuses the name; as 404, at most `invalid_ttl`.
--  * no answer, a timeout, another status or a malformed response: the
--    cached certificate is served even past its max-age (up to `max_stale`),
--    else the fallback. Requests are not retried for `error_ttl` seconds:
--    for every name when the sidecar could not be reached or did not start
--    an answer, for that name only when it answered badly (a status line,
--    then anything wrong). A max-age is taken at most MAX_AGE (a day).
--
-- A handshake is never failed by this module when the fallback could serve
-- it: the configured certificate is replaced only once the new chain and key
-- have both been parsed and found to match. Errors are logged at most once
-- per `log_interval` per kind and worker, with a count of those suppressed.
--
-- Names are lowercased and a trailing dot is dropped; a name the sidecar
-- would refuse as no host name (anything but [a-z0-9.-], an empty label or
-- one over 63 bytes, a label starting or ending with a hyphen, "--" in the
-- third and fourth places but for "xn--", an all-digit last label as in an
-- IPv4 address, over 253 bytes) gets the fallback without asking. Negative
-- answers are cached only where the shared dict has room: a flood of
-- unknown names must not push certificates out.
--
-- Sizing: the shared dict holds one PEM (about 3-5 KB for ECDSA, more for
-- RSA chains) per name that was asked for, wildcard subnames each taking
-- their own copy; when it is full the least recently used entries go.


local ffi = require "ffi"
local ssl = require "ngx.ssl"
local lrucache = require "resty.lrucache"


local ngx = ngx
local ngx_log = ngx.log
local ngx_now = ngx.now
local ngx_sleep = ngx.sleep
local ngx_md5 = ngx.md5
local ngx_socket_tcp = ngx.socket.tcp
local ngx_worker_pid = ngx.worker.pid
local ngx_shared = ngx.shared
local ERR = ngx.ERR
local C = ffi.C
local ssl_server_name = ssl.server_name
local ssl_clear_certs = ssl.clear_certs
local ssl_set_cert = ssl.set_cert
local ssl_set_priv_key = ssl.set_priv_key
local ssl_parse_pem_cert = ssl.parse_pem_cert
local ssl_parse_pem_priv_key = ssl.parse_pem_priv_key
local str_byte = string.byte
local str_find = string.find
local str_format = string.format
local str_lower = string.lower
local str_match = string.match
local str_sub = string.sub
local math_huge = math.huge
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


local _M = { _VERSION = "0.1.0" }


local DOT = str_byte(".")
local HYPHEN = str_byte("-")
local DOWN_KEY = "!down"         -- set for error_ttl after a transport failure
local BAD_PREFIX = "!bad:"       -- "!bad:" .. name, after a bad answer for name
local NEGATIVE = "-"             -- the version of a cached 404/400
local MAX_HEADERS = 64
local MAX_BODY = 1024 * 1024
local DEFAULT_MAX_AGE = 60
local MAX_AGE = 24 * 3600
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
    -- parsed certificates kept per worker
    lru_size = 10000,
    -- how long a 404 (no certificate yet) is remembered at most; a shorter
    -- max-age from the sidecar wins
    negative_ttl = 5,
    -- the same for a 400 (a name the sidecar refuses)
    invalid_ttl = 300,
    -- how long to stop asking after the sidecar failed (more than 0: a
    -- shared dict entry with no expiry would stop asking for good)
    error_ttl = 2,
    -- how long past its max-age a certificate may be served while the
    -- sidecar fails; 0 keeps it until the shared dict needs the room
    max_stale = 7 * 24 * 3600,
    -- at most one log line per kind of error per worker in this interval
    log_interval = 60,
    keepalive_timeout_ms = 10000,
    keepalive_pool_size = 32,
}


-- The settings in force, copied into upvalues by apply_options.
local sock_host, sock_port, sock_path
local connect_timeout, read_timeout, lock_timeout
local negative_ttl, invalid_ttl, error_ttl, max_stale, log_interval
local keepalive_timeout, keepalive_pool_size
local certs, locks
local lru_size
local lru


-- Parsed chains and keys by version, so names served by one certificate
-- (its SANs, a wildcard's subnames) share one parse. Weak: an entry lives as
-- long as some LRU entry holds it.
local parsed_chains = setmetatable({}, { __mode = "v" })
local parsed_keys = setmetatable({}, { __mode = "v" })


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
    certs = ngx_shared[o.shared_dict]
    locks = ngx_shared[o.lock_dict]
    if o.lru_size ~= lru_size then
        lru_size = o.lru_size
        lru = lrucache.new(lru_size)
    end
end


-- Usable before configure runs (and without it, if the defaults suit).
apply_options(defaults)


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
                        "error_ttl" }) do
        if o[k] <= 0 or o[k] ~= o[k] then  -- NaN too
            misuse(k, "must be positive")
        end
    end
    for _, k in ipairs({ "negative_ttl", "invalid_ttl", "max_stale" }) do
        if o[k] < 0 or o[k] ~= o[k] then
            misuse(k, "must not be negative")
        end
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


-- key_matches(chain, key) tells whether the private key belongs to the
-- chain's leaf, with OpenSSL's X509_check_private_key; set_priv_key would
-- fail on a mismatch only after clear_certs removed the fallback. Declared
-- under private names so other FFI users of OpenSSL are not disturbed; when
-- the symbols cannot be resolved the check is skipped.
local key_matches
do
    local ok = pcall(ffi.cdef, [[
        void *certserver_sk_value(const void *sk, int i)
            __asm__("OPENSSL_sk_value");
        int certserver_x509_check_private_key(const void *x509,
            const void *pkey) __asm__("X509_check_private_key");
        void certserver_err_clear_error(void) __asm__("ERR_clear_error");
    ]])
    if ok then
        ok = pcall(function ()
            return C.certserver_sk_value, C.certserver_x509_check_private_key,
                   C.certserver_err_clear_error
        end)
    end
    if ok then
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
end


-- socket_file_exists(path) tells whether a unix socket file exists. nginx
-- logs a failed connect to a missing socket file at [crit] once per
-- attempt; a stopped sidecar removes its socket, so look first.
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
            return C.certserver_access(path, 0) == 0
        end
    else
        socket_file_exists = function ()
            return true
        end
    end
end


-- Parses body (PEM chain, then PEM key) into cdata, once per version.
local function parse(body, version)
    local chain, key = parsed_chains[version], parsed_keys[version]
    if chain and key then
        return chain, key
    end

    local at = str_find(body, KEY_PATTERN)
    if not at then
        return nil, "no private key in the response"
    end
    local ok, err
    ok, chain, err = pcall(ssl_parse_pem_cert, str_sub(body, 1, at - 1))
    if not ok or not chain then
        return nil, "bad certificate chain: " .. tostring(err or chain)
    end
    ok, key, err = pcall(ssl_parse_pem_priv_key, str_sub(body, at))
    if not ok or not key then
        return nil, "bad private key: " .. tostring(err or key)
    end
    if not key_matches(chain, key) then
        return nil, "the private key does not match the certificate"
    end

    parsed_chains[version] = chain
    parsed_keys[version] = key
    return chain, key
end


local function stale_deadline(fresh_until)
    if max_stale > 0 then
        return fresh_until + max_stale
    end
    return math_huge
end


-- A cache entry: a certificate (chain and key set) or a negative answer.
-- Until fresh_until a worker serves it without looking for a newer copy;
-- a certificate may be served stale (while the sidecar fails) until
-- stale_until.
local function new_entry(fresh_until, version, chain, key)
    return {
        fresh_until = fresh_until,
        stale_until = stale_deadline(fresh_until),
        version = version,
        chain = chain,
        key = key,
    }
end


-- The shared dict's value for a name: "<fresh_until> <version>\n<body>".
local function encode(fresh_until, version, body)
    return str_format("%.3f %s\n", fresh_until, version) .. (body or "")
end


-- Reads name from the shared dict into the LRU, re-parsing only a changed
-- version; cur is the worker's LRU entry (or nil). Returns the entry, fresh
-- or stale, or nil.
local function load_shared(name, cur)
    local v = certs:get(name)
    if not v then
        return cur
    end
    local sp = str_find(v, " ", 1, true)
    local nl = sp and str_find(v, "\n", sp + 1, true)
    local fresh_until = sp and tonumber(str_sub(v, 1, sp - 1))
    if not (nl and fresh_until) then
        log_limited("shared", "malformed shared dict entry for " .. name)
        certs:delete(name)
        return cur
    end
    local version = str_sub(v, sp + 1, nl - 1)

    if cur and cur.version == version then
        if fresh_until > cur.fresh_until then
            cur.fresh_until = fresh_until
            cur.stale_until = stale_deadline(fresh_until)
        end
        return cur
    end

    local entry
    if version == NEGATIVE then
        entry = new_entry(fresh_until, version)
    else
        local chain, key = parse(str_sub(v, nl + 1), version)
        if not chain then
            log_limited("parse", "cached certificate for " .. name
                                 .. " does not parse: " .. key)
            certs:delete(name)
            return cur
        end
        entry = new_entry(fresh_until, version, chain, key)
    end
    lru:set(name, entry)
    return entry
end


local REQUEST_HEAD = "GET /v1/certs/"
local REQUEST_TAIL = " HTTP/1.1\r\nHost: certserver\r\n"
                     .. "User-Agent: certserver-lua\r\n\r\n"


-- Sends the request for name on sock and reads the response. Returns
-- status, body, max_age (nil without one), keepalive; or nil, err,
-- retryable, answered: retryable when the connection turned out closed
-- before anything was received (a pooled connection the sidecar had
-- closed; a timeout is not retried, it would only double the wait),
-- answered when a status line came and what followed was wrong.
local function exchange(sock, name)
    local ok, err = sock:send(REQUEST_HEAD .. name .. REQUEST_TAIL)
    if not ok then
        return nil, "send: " .. err, err ~= "timeout"
    end

    local line
    line, err = sock:receive("*l")
    if not line then
        return nil, "read status line: " .. err, err == "closed"
    end
    local status = tonumber(str_match(line, "^HTTP/1%.[01] (%d%d%d)"))
    if not status then
        return nil, "malformed status line", false, true
    end

    local length, max_age, keepalive
    local complete = false
    for _ = 1, MAX_HEADERS do
        line, err = sock:receive("*l")
        if not line then
            return nil, "read header: " .. err, false, true
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
            elseif k == "connection" then
                keepalive = str_lower(v) ~= "close"
            elseif k == "transfer-encoding" then
                return nil, "unsupported transfer-encoding " .. v, false, true
            end
        end
    end
    if not complete then
        return nil, "too many header lines", false, true
    end
    if not length then
        return nil, "no valid content-length", false, true
    end
    if length > MAX_BODY then
        return nil, "body of " .. length .. " bytes is too large", false, true
    end

    local body = ""
    if length > 0 then
        body, err = sock:receive(length)
        if not body then
            return nil, "read body: " .. err, false, true
        end
    end
    return status, body, max_age, keepalive ~= false
end


-- Asks the sidecar for name. Returns status, body, max_age (or nil); or
-- nil, err, answered (see exchange).
local function fetch(name)
    if sock_path and not socket_file_exists(sock_path) then
        return nil, "no socket file " .. sock_path
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
            return nil, "connect: " .. err
        end
        local reused = sock:getreusedtimes()

        local status, body, max_age, keepalive = exchange(sock, name)
        if status then
            if keepalive then
                sock:setkeepalive(keepalive_timeout, keepalive_pool_size)
            else
                sock:close()
            end
            return status, body, max_age
        end
        sock:close()
        local retryable, answered = max_age, keepalive
        err = body
        if answered then
            return nil, err, true
        end
        if reused == 0 or not retryable then
            break
        end
    end
    return nil, err, false
end


-- hold(entry) keeps serving entry, stale, without looking again for
-- error_ttl: while the sidecar is not asked, nothing newer can come.
local function hold(entry)
    if entry then
        entry.fresh_until = ngx_now() + error_ttl
    end
    return entry
end


-- Fetches name from the sidecar and caches the answer. cur is what the
-- caches hold (or nil). Returns the entry to serve, or nil.
local function refresh(name, cur)
    local status, body, extra = fetch(name)
    local now = ngx_now()
    local max_age, answered
    if status then
        max_age = extra and math_min(extra, MAX_AGE)
    else
        answered = extra
    end

    if status == 200 then
        max_age = max_age or DEFAULT_MAX_AGE
        local version = ngx_md5(body)
        local chain, key = parse(body, version)
        if not chain then
            log_limited("response", "bad answer for " .. name .. ": " .. key)
            certs:set(BAD_PREFIX .. name, true, error_ttl)
            return hold(cur)
        end
        local entry = new_entry(now + max_age, version, chain, key)
        local exptime = 0
        if max_stale > 0 then
            exptime = max_age + max_stale
        end
        local ok, err = certs:set(name,
                                  encode(entry.fresh_until, version, body),
                                  exptime)
        if not ok then
            log_limited("shared", "cannot cache " .. name .. " in the shared "
                                  .. "dict: " .. err)
        end
        lru:set(name, entry)
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
        local entry = new_entry(now + ttl, NEGATIVE)
        if ttl > 0 then
            -- safe_set: a negative answer takes only free room, never a
            -- certificate's (a flood of unknown names would evict them).
            local ok = certs:safe_set(name,
                                      encode(entry.fresh_until, NEGATIVE), ttl)
            if not ok then
                certs:delete(name) -- no stale certificate may outlive the 404
            end
        else
            certs:delete(name)
        end
        lru:set(name, entry)
        return entry
    end

    if status then
        log_limited("response", "sidecar answered " .. status .. " for "
                                .. name)
        certs:set(BAD_PREFIX .. name, true, error_ttl)
        return hold(cur)
    end
    if answered then
        log_limited("response", "bad answer for " .. name .. ": " .. body)
        certs:set(BAD_PREFIX .. name, true, error_ttl)
        return hold(cur)
    end

    local where = sock_host
    if sock_port then
        where = sock_host .. ":" .. sock_port
    end
    log_limited("down", "sidecar at " .. where .. " failed (" .. body
                        .. "); serving cached certificates and the fallback")
    certs:set(DOWN_KEY, true, error_ttl)
    return hold(cur)
end


-- valid_name mirrors the sidecar's check of a host name (store/hostname),
-- so that what it would refuse is not asked about at all.
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


-- lock_seq numbers this worker's fetch locks, so that a lock that outlived
-- lock_timeout and was taken by another worker is not deleted as ours.
local lock_seq = 0


-- The slow path: the LRU entry cur is missing or stale. Returns the entry
-- to serve (possibly stale or negative) or nil.
local function lookup(name, cur)
    if not valid_name(name) then
        return nil
    end
    if not (certs and locks) then
        log_limited("config", "lua_shared_dict for certserver is missing; "
                              .. "see nginx/certserver-http.conf")
        return cur
    end

    local entry = load_shared(name, cur)
    if entry and entry.fresh_until > ngx_now() then
        return entry
    end

    if certs:get(DOWN_KEY) or certs:get(BAD_PREFIX .. name) then
        return hold(entry)
    end

    lock_seq = lock_seq + 1
    local token = ngx_worker_pid() .. ":" .. lock_seq
    local ok, err = locks:add(name, token, lock_timeout)
    if ok then
        local res
        ok, res = pcall(refresh, name, entry)
        -- Ours unless it expired and another worker took it meanwhile.
        if locks:get(name) == token then
            locks:delete(name)
        end
        if not ok then
            log_limited("internal", "internal error: " .. tostring(res))
            return hold(entry)
        end
        return res
    end
    if err ~= "exists" then
        log_limited("lock", "cannot lock " .. name .. ": " .. tostring(err))
        return hold(entry)
    end

    -- Another worker is asking the sidecar. Serve what we have, else wait
    -- for its answer.
    if entry and entry.chain then
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


local function install(name, entry)
    local ok, err = ssl_clear_certs()
    if ok then
        ok, err = ssl_set_cert(entry.chain)
    end
    if ok then
        ok, err = ssl_set_priv_key(entry.key)
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
-- when it set a certificate, false when the fallback is served.
function _M.ssl_certificate()
    local name = ssl_server_name()
    if not name then
        return false
    end
    name = str_lower(name)
    if str_byte(name, -1) == DOT then
        name = str_sub(name, 1, -2)
    end

    local entry = lru:get(name)
    if not entry or entry.fresh_until <= ngx_now() then
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

    if entry and entry.chain then
        return install(name, entry)
    end
    return false
end


return _M
