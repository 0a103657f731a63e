package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// nginxDirective is one directive of an nginx configuration, with where it
// is written. Includes are expanded: the directives of an included file
// sit in the block of the include, each with its own file and line.
type nginxDirective struct {
	name  string
	args  []string
	file  string
	line  int
	block []*nginxDirective // the directives inside { }, nil when none
	// lua is the text between the braces of a *_by_lua_block directive,
	// which is Lua, not nginx syntax; luaLine is the line it starts on.
	lua     string
	luaLine int
}

// where is "file:line" of the directive.
func (d *nginxDirective) where() string { return fmt.Sprintf("%s:%d", d.file, d.line) }

// nginxFiles is where the text of configuration files comes from: the
// dump of `nginx -T`, or the disk when nginx -t fails.
type nginxFiles interface {
	read(name string) (string, error)
	glob(pattern string) ([]string, error)
}

// dumpFiles are the files `nginx -T` printed, by name.
type dumpFiles map[string]string

func (d dumpFiles) read(name string) (string, error) {
	s, ok := d[name]
	if !ok {
		return "", fmt.Errorf("%s: not in the output of nginx -T", name)
	}
	return s, nil
}

func (d dumpFiles) glob(pattern string) ([]string, error) {
	var out []string
	for name := range d {
		if ok, err := filepath.Match(pattern, name); err != nil {
			return nil, err
		} else if ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// diskFiles reads the configuration files themselves.
type diskFiles struct{}

func (diskFiles) read(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}

func (diskFiles) glob(pattern string) ([]string, error) { return filepath.Glob(pattern) }

// splitNginxDump splits the standard output of `nginx -T` into its files
// ("# configuration file NAME:" starts each) and returns them with the
// name of the first, the main configuration file.
func splitNginxDump(out string) (dumpFiles, string) {
	files := dumpFiles{}
	var main, cur string
	var b strings.Builder
	flush := func() {
		if cur != "" {
			files[cur] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "# configuration file "); ok && strings.HasSuffix(name, ":") {
			flush()
			cur = strings.TrimSuffix(name, ":")
			if main == "" {
				main = cur
			}
			continue
		}
		if cur != "" {
			b.WriteString(line)
		}
	}
	flush()
	return files, main
}

// parseNginxConfig parses the configuration file main and, in place of
// every include, the files it names (relative paths are relative to the
// directory of main, as nginx's are). It returns the top-level
// directives.
func parseNginxConfig(files nginxFiles, main string) ([]*nginxDirective, error) {
	p := &nginxParser{files: files, confDir: filepath.Dir(main)}
	return p.file(main, 0)
}

type nginxParser struct {
	files   nginxFiles
	confDir string
}

// file parses one file with its includes expanded.
func (p *nginxParser) file(name string, depth int) ([]*nginxDirective, error) {
	if depth > 16 {
		return nil, fmt.Errorf("%s: includes nested more than 16 deep", name)
	}
	text, err := p.files.read(name)
	if err != nil {
		return nil, err
	}
	lx := &nginxLexer{src: text, file: name, line: 1}
	ds, err := p.block(lx, depth, false)
	if err != nil {
		return nil, err
	}
	return ds, nil
}

// block parses directives until the end of the file or, when inner, the
// closing brace.
func (p *nginxParser) block(lx *nginxLexer, depth int, inner bool) ([]*nginxDirective, error) {
	var out []*nginxDirective
	var cur *nginxDirective
	for {
		tok, line, kind, err := lx.next()
		if err != nil {
			return nil, err
		}
		switch kind {
		case tokEOF:
			if inner || cur != nil {
				return nil, fmt.Errorf("%s:%d: unexpected end of file", lx.file, lx.line)
			}
			return out, nil
		case tokWord:
			if cur == nil {
				cur = &nginxDirective{name: tok, file: lx.file, line: line}
			} else {
				cur.args = append(cur.args, tok)
			}
		case tokSemicolon:
			if cur == nil {
				continue
			}
			if cur.name == "include" && len(cur.args) == 1 {
				inc, err := p.include(cur.args[0], depth)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", cur.where(), err)
				}
				out = append(out, inc...)
			} else {
				out = append(out, cur)
			}
			cur = nil
		case tokOpen:
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: unexpected \"{\"", lx.file, line)
			}
			if strings.HasSuffix(cur.name, "_by_lua_block") {
				cur.luaLine = lx.line
				if cur.lua, err = lx.luaBlock(); err != nil {
					return nil, err
				}
				cur.block = []*nginxDirective{}
			} else if cur.block, err = p.block(lx, depth, true); err != nil {
				return nil, err
			}
			if cur.block == nil {
				cur.block = []*nginxDirective{}
			}
			out = append(out, cur)
			cur = nil
		case tokClose:
			if !inner || cur != nil {
				return nil, fmt.Errorf("%s:%d: unexpected \"}\"", lx.file, line)
			}
			return out, nil
		}
	}
}

// include returns the directives of the files pattern names.
func (p *nginxParser) include(pattern string, depth int) ([]*nginxDirective, error) {
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(p.confDir, pattern)
	}
	names, err := p.files.glob(pattern)
	if err != nil {
		return nil, fmt.Errorf("include %s: %w", pattern, err)
	}
	if len(names) == 0 && !strings.ContainsAny(pattern, "*?[") {
		return nil, fmt.Errorf("include %s: %w", pattern, os.ErrNotExist)
	}
	var out []*nginxDirective
	for _, n := range names {
		ds, err := p.file(n, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

type tokKind int

const (
	tokEOF tokKind = iota
	tokWord
	tokSemicolon
	tokOpen
	tokClose
)

// nginxLexer splits nginx configuration text into words, ";", "{" and
// "}", dropping comments and unquoting strings.
type nginxLexer struct {
	src  string
	pos  int
	file string
	line int
}

func (lx *nginxLexer) next() (tok string, line int, kind tokKind, err error) {
	for lx.pos < len(lx.src) {
		c := lx.src[lx.pos]
		switch {
		case c == '\n':
			lx.line++
			lx.pos++
		case c == ' ' || c == '\t' || c == '\r':
			lx.pos++
		case c == '#':
			for lx.pos < len(lx.src) && lx.src[lx.pos] != '\n' {
				lx.pos++
			}
		case c == ';':
			lx.pos++
			return ";", lx.line, tokSemicolon, nil
		case c == '{':
			lx.pos++
			return "{", lx.line, tokOpen, nil
		case c == '}':
			lx.pos++
			return "}", lx.line, tokClose, nil
		case c == '"' || c == '\'':
			line = lx.line
			var b strings.Builder
			lx.pos++
			for {
				if lx.pos >= len(lx.src) {
					return "", 0, 0, fmt.Errorf("%s:%d: unterminated string", lx.file, line)
				}
				d := lx.src[lx.pos]
				lx.pos++
				switch {
				case d == c:
					return b.String(), line, tokWord, nil
				case d == '\\' && lx.pos < len(lx.src):
					b.WriteByte(lx.src[lx.pos])
					lx.pos++
				default:
					if d == '\n' {
						lx.line++
					}
					b.WriteByte(d)
				}
			}
		default:
			start := lx.pos
			for lx.pos < len(lx.src) && !strings.ContainsRune(" \t\r\n;{}\"'", rune(lx.src[lx.pos])) {
				if lx.src[lx.pos] == '\\' {
					lx.pos++
				}
				lx.pos++
			}
			lx.pos = min(lx.pos, len(lx.src))
			return lx.src[start:lx.pos], lx.line, tokWord, nil
		}
	}
	return "", lx.line, tokEOF, nil
}

// luaBlock returns the Lua text up to the brace that closes the block
// just opened, and moves past it. Braces inside Lua strings and comments
// do not count.
func (lx *nginxLexer) luaBlock() (string, error) {
	start, startLine, depth := lx.pos, lx.line, 1
	s := lx.src
	for lx.pos < len(s) {
		c := s[lx.pos]
		switch {
		case c == '\n':
			lx.line++
			lx.pos++
		case c == '{':
			depth++
			lx.pos++
		case c == '}':
			depth--
			lx.pos++
			if depth == 0 {
				return s[start : lx.pos-1], nil
			}
		case c == '"' || c == '\'':
			lx.pos++
			for lx.pos < len(s) && s[lx.pos] != c && s[lx.pos] != '\n' {
				if s[lx.pos] == '\\' {
					lx.pos++
				}
				lx.pos++
			}
			lx.pos++
		case strings.HasPrefix(s[lx.pos:], "--"):
			lx.pos += 2
			if end, ok := longBracket(s[lx.pos:]); ok {
				lx.skip(end)
				continue
			}
			for lx.pos < len(s) && s[lx.pos] != '\n' {
				lx.pos++
			}
		case c == '[':
			if end, ok := longBracket(s[lx.pos:]); ok {
				lx.skip(end)
				continue
			}
			lx.pos++
		default:
			lx.pos++
		}
	}
	return "", fmt.Errorf("%s:%d: the Lua block is not closed", lx.file, startLine)
}

// skip moves n bytes on, counting lines.
func (lx *nginxLexer) skip(n int) {
	end := min(lx.pos+n, len(lx.src))
	lx.line += strings.Count(lx.src[lx.pos:end], "\n")
	lx.pos = end
}

// longBracket returns the length of the Lua long string or comment s
// starts with ("[[ ... ]]", "[==[ ... ]==]"), and whether it starts with
// one.
func longBracket(s string) (int, bool) {
	if !strings.HasPrefix(s, "[") {
		return 0, false
	}
	level := 1
	for level < len(s) && s[level] == '=' {
		level++
	}
	if level >= len(s) || s[level] != '[' {
		return 0, false
	}
	closing := "]" + strings.Repeat("=", level-1) + "]"
	i := strings.Index(s[level+1:], closing)
	if i < 0 {
		return len(s), true
	}
	return level + 1 + i + len(closing), true
}

// children returns the directives named name directly in ds.
func children(ds []*nginxDirective, name string) []*nginxDirective {
	var out []*nginxDirective
	for _, d := range ds {
		if d.name == name {
			out = append(out, d)
		}
	}
	return out
}

// child returns the last directive named name directly in ds (nginx takes
// the last of a repeated one), or nil.
func child(ds []*nginxDirective, name string) *nginxDirective {
	all := children(ds, name)
	if len(all) == 0 {
		return nil
	}
	return all[len(all)-1]
}
