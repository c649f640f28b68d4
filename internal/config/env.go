package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
)

// environ answers questions about the environment for one Load, reading
// variables through Options.Getenv and the home directory at most once.
type environ struct {
	getenv   func(string) string
	flagPath string
	homeOpt  string
	homeDir  string
	homeErr  error
	homeDone bool
}

func newEnv(opts Options) *environ {
	g := opts.Getenv
	if g == nil {
		g = os.Getenv
	}
	return &environ{getenv: g, flagPath: opts.Path, homeOpt: opts.Home}
}

// home returns the home directory: Options.Home, else $HOME, else the
// operating system's idea of it.
func (e *environ) home() (string, error) {
	if e.homeDone {
		return e.homeDir, e.homeErr
	}
	e.homeDone = true
	h := e.homeOpt
	if h == "" {
		h = e.getenv("HOME")
	}
	if h == "" {
		var err error
		if h, err = os.UserHomeDir(); err != nil {
			e.homeErr = errors.New("the home directory is unknown")
			return "", e.homeErr
		}
	}
	if !filepath.IsAbs(h) {
		e.homeErr = errors.New("the home directory " + h + " is not an absolute path")
		return "", e.homeErr
	}
	e.homeDir = filepath.Clean(h)
	return e.homeDir, nil
}

// xdg returns an XDG base-directory variable, or "" when it is unset, empty
// or relative (the XDG spec says to ignore relative values).
func (e *environ) xdg(name string) string {
	v := e.getenv(name)
	if v == "" || !filepath.IsAbs(v) {
		return ""
	}
	return filepath.Clean(v)
}

// configPath picks the config file by precedence: --config, BANGER_CONFIG,
// $XDG_CONFIG_HOME/banger/config.toml, ~/.config/banger/config.toml.
func (e *environ) configPath() (path, from string, err error) {
	explicit := func(p, from string) (string, string, error) {
		p, err := e.expand(p)
		if err != nil {
			return "", "", errors.New("config: cannot use " + from + " path: " + err.Error())
		}
		if !filepath.IsAbs(p) {
			if p, err = filepath.Abs(p); err != nil {
				return "", "", errors.New("config: cannot resolve " + from + " path: " + err.Error())
			}
		}
		return filepath.Clean(p), from, nil
	}
	if p := e.flagPath; p != "" {
		return explicit(p, PathFromFlag)
	}
	if p := e.getenv("BANGER_CONFIG"); p != "" {
		return explicit(p, PathFromEnv)
	}
	if x := e.xdg("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "banger", "config.toml"), PathFromXDG, nil
	}
	home, err := e.home()
	if err != nil {
		return "", "", errors.New("config: cannot find the config file: " + err.Error() + "; set HOME or XDG_CONFIG_HOME, or pass --config")
	}
	return filepath.Join(home, ".config", "banger", "config.toml"), PathFromDefault, nil
}

// expand replaces a leading "~/" (or a lone "~") with the home directory.
// Other paths are returned unchanged; "~user/" is not supported.
func (e *environ) expand(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		return p, nil
	}
	home, err := e.home()
	if err != nil {
		return "", errors.New("cannot expand ~: " + err.Error() + " (set HOME)")
	}
	return filepath.Join(home, strings.TrimPrefix(p, "~")), nil
}
