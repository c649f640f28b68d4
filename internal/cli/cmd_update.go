package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"banger/internal/buildinfo"
	"banger/internal/release"
	"banger/internal/update"
)

// updateOpts are the flags of `banger update`.
type updateOpts struct {
	check, rollback, yes, allowDowngrade bool
	version                              string
	out                                  outputFormat
}

// newUpdateCmd builds `banger update`.
func (a *app) newUpdateCmd() *cobra.Command {
	var o updateOpts
	cmd := &cobra.Command{
		Use:   "update",
		Short: "Install a newer signed release of banger over this one, check for one, or roll back",
		Long: `banger update replaces banger, bangerd and banger-vsock-agent, where this
banger is installed, with those of a release signed by banger's key (from
release_url), keeping the old ones as <name>.prev. Then it restarts what
runs: bangerd is stopped (VMs keep running), the helper
(banger-helper.service) is restarted if it runs, and the new bangerd is
started and must answer as the new version; otherwise the .prev binaries
are put back and started again. See docs/update.md.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(cmd); err != nil {
				return err
			}
			switch {
			case o.check:
				return a.updateCheck(cmd.Context(), o)
			case o.rollback:
				return a.updateRollback(cmd.Context(), o)
			}
			return a.updateInstall(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.check, "check", false, "say which version is installed, which is the newest, and whether the systemd units changed; change nothing")
	f.StringVar(&o.version, "version", "", "install this version (vX.Y.Z) instead of the newest")
	f.BoolVarP(&o.yes, "yes", "y", false, "do not ask for confirmation (needed when the input is not a terminal)")
	f.BoolVar(&o.allowDowngrade, "allow-downgrade", false, "allow installing an older version than the installed one")
	f.BoolVar(&o.rollback, "rollback", false, "put the <name>.prev binaries of the last update back and restart on them")
	addOutputFlag(cmd, &o.out)
	return cmd
}

func (o *updateOpts) validate(cmd *cobra.Command) error {
	switch {
	case o.check && o.rollback:
		return usagef("--check and --rollback do not go together")
	case o.rollback && (o.version != "" || o.allowDowngrade):
		return usagef("--rollback goes back to the .prev binaries; it takes no --version or --allow-downgrade")
	case o.check && (o.yes || o.allowDowngrade):
		return usagef("--check changes nothing; it takes no --yes or --allow-downgrade")
	case cmd.Flags().Changed("output") && !o.check:
		return usagef("-o applies to --check only")
	}
	return nil
}

// releaseSource is the release tree of the config's release_url.
func (a *app) releaseSource() (*release.Source, error) {
	l, err := a.config()
	if err != nil {
		return nil, err
	}
	return &release.Source{Base: l.Config.ReleaseURL}, nil
}

// checkResult is what `banger update --check` reports.
type checkResult struct {
	Installed          string   `json:"installed"`
	InstalledIsRelease bool     `json:"installed_is_release"`
	Latest             string   `json:"latest"`
	UpdateAvailable    bool     `json:"update_available"`
	UnitsKnown         bool     `json:"units_known"`
	UnitsChanged       []string `json:"units_changed"`
	UnitsNote          string   `json:"units_note,omitempty"`
	ReleaseURL         string   `json:"release_url"`
	KeyOverridden      bool     `json:"key_overridden"`
}

// updateCheck says what is installed, what is newest and whether the units
// changed between them. It changes nothing.
func (a *app) updateCheck(ctx context.Context, o updateOpts) error {
	src, err := a.releaseSource()
	if err != nil {
		return err
	}
	res := checkResult{Installed: buildinfo.Version, ReleaseURL: src.Base, KeyOverridden: release.KeyOverridden(), UnitsChanged: []string{}}
	latest, err := src.Latest(ctx) // its errors name the tree and the file
	if err != nil {
		return err
	}
	res.Latest = latest.String()
	installed, perr := release.ParseVersion(buildinfo.Version)
	res.InstalledIsRelease = perr == nil
	switch {
	case perr != nil:
		res.UpdateAvailable = true
		res.UnitsNote = fmt.Sprintf("the installed build %s is not a release, so its units cannot be compared", buildinfo.Version)
	default:
		res.UpdateAvailable = latest.Compare(installed) > 0
		changed, note := a.unitsChanged(ctx, src, installed, latest)
		res.UnitsKnown, res.UnitsChanged, res.UnitsNote = note == "", changed, note
	}
	if o.out.json() {
		return writeJSON(a.stdout, res)
	}
	tw := newTable(a.stdout, "FIELD", "VALUE")
	installedText := res.Installed
	if !res.InstalledIsRelease {
		installedText += " (not a release build: it cannot be compared with releases)"
	}
	row(tw, "installed", installedText)
	newest := res.Latest
	switch {
	case !res.InstalledIsRelease:
		newest += " (`banger update` installs it)"
	case res.UpdateAvailable:
		newest += " (newer: run `banger update` to install it)"
	case res.InstalledIsRelease && latest.Compare(installed) == 0:
		newest += " (installed)"
	default:
		newest += " (older than the installed version)"
	}
	row(tw, "newest", newest)
	units := "unchanged"
	switch {
	case !res.UnitsKnown:
		units = "unknown: " + res.UnitsNote
	case len(res.UnitsChanged) > 0:
		units = "changed: " + strings.Join(res.UnitsChanged, ", ")
	}
	row(tw, "units", units)
	row(tw, "release_url", res.ReleaseURL)
	key := "the pinned release key"
	if res.KeyOverridden {
		key = "a key set at build time, NOT the pinned release key (a test build)"
	}
	row(tw, "trusts", key)
	return tw.Flush()
}

// unitsChanged compares the unit templates of two releases, through their
// verified sums; note says why they could not be compared.
func (a *app) unitsChanged(ctx context.Context, src *release.Source, from, to release.Version) ([]string, string) {
	if from.Compare(to) == 0 {
		return []string{}, ""
	}
	old, err := releaseUnits(ctx, src, from)
	if err != nil {
		return []string{}, fmt.Sprintf("cannot compare with the installed version: %v", err)
	}
	cur, err := releaseUnits(ctx, src, to)
	if err != nil {
		return []string{}, fmt.Sprintf("cannot compare with the newest version: %v", err)
	}
	changed := update.UnitsChanged(release.Units, old, cur)
	if changed == nil {
		changed = []string{}
	}
	return changed, ""
}

// releaseUnits downloads the unit templates of version v, verified.
func releaseUnits(ctx context.Context, src *release.Source, v release.Version) (map[string][]byte, error) {
	rel, err := src.Release(ctx, v)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, u := range release.Units {
		b, err := src.Fetch(ctx, rel, u)
		if err != nil {
			return nil, err
		}
		out[u] = b
	}
	return out, nil
}

// locateForUpdate finds this banger's install, refuses an interrupted
// update and takes the update lock.
func (a *app) locateForUpdate() (*update.Install, func(), error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("find the running banger: %w", err)
	}
	in, err := update.Locate(exe)
	if err != nil {
		return nil, nil, err
	}
	unlock, err := in.Lock()
	if err != nil {
		return nil, nil, err
	}
	return in, unlock, nil
}

// sudoCommand is the command line to run this update again as root.
func sudoCommand(in *update.Install, o updateOpts) string {
	args := []string{"sudo", in.Path("banger"), "update"}
	if o.rollback {
		args = append(args, "--rollback")
	}
	if o.version != "" {
		args = append(args, "--version", o.version)
	}
	if o.allowDowngrade {
		args = append(args, "--allow-downgrade")
	}
	if o.yes {
		args = append(args, "--yes")
	}
	return strings.Join(args, " ")
}

// updateInstall downloads, verifies, swaps and restarts.
func (a *app) updateInstall(ctx context.Context, o updateOpts) error {
	in, unlock, err := a.locateForUpdate()
	if err != nil {
		return err
	}
	defer unlock()
	j, err := in.ReadJournal()
	if err != nil {
		return err
	}
	resume := j.State == update.StateSwapped && j.To == buildinfo.Version
	if j.State == update.StateSwapped && !resume {
		return &update.RefusedError{Reason: fmt.Sprintf("an earlier update from %s to %s was interrupted after its binaries were replaced, but this banger is %s, not %s: run `banger update --rollback` to put %s back", orWord(j.From, "the previous version"), j.To, buildinfo.Version, j.To, orWord(j.From, "the previous version"))}
	}
	if err := in.Interrupted(); err != nil && !resume {
		return err
	}
	svc, err := a.newUpdateServices(in)
	if err != nil {
		return err
	}
	was, err := update.Survey(ctx, svc, os.Geteuid(), sudoCommand(in, o))
	if err != nil {
		return err
	}
	if resume && o.version != "" && o.version != j.To {
		return &update.RefusedError{Reason: fmt.Sprintf("an earlier update to %s was interrupted after its binaries were replaced: finish it first with `banger update` (or undo it with `banger update --rollback`), then install %s", j.To, o.version)}
	}
	if resume {
		return a.updateResume(ctx, o, in, svc, was, j)
	}
	src, err := a.releaseSource()
	if err != nil {
		return err
	}
	target, err := a.updateTarget(ctx, src, o)
	if err != nil {
		return err
	}
	installed, perr := release.ParseVersion(buildinfo.Version)
	cmp := 0
	if perr == nil {
		cmp = target.Compare(installed)
	}
	if err := update.Direction(buildinfo.Version, target.String(), perr == nil, cmp, o.allowDowngrade); err != nil {
		var already *update.AlreadyError
		if errors.As(err, &already) {
			fmt.Fprintf(a.stdout, "banger is already at %s\n", already.Version)
			return nil
		}
		return err
	}
	if err := a.confirm(o, fmt.Sprintf("Replace banger %s with %s in %s, and restart bangerd%s?", buildinfo.Version, target, in.Dir, helperNote(was))); err != nil {
		return err
	}
	// From here on, Ctrl-C or SIGTERM cancels ctx: a download stops and
	// its files are removed; a restart under way is rolled back.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	staged, units, cleanup, err := a.fetchRelease(ctx, src, in, target)
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		return err
	}
	if !a.quiet {
		fmt.Fprintf(a.stderr, "Installing %s in %s and restarting...\n", target, in.Dir)
	}
	if err := update.Apply(ctx, in, svc, was, staged, buildinfo.Version, target.String()); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "banger %s installed in %s; the previous binaries are kept as <name>.prev (`banger update --rollback` puts them back)\n", target, in.Dir)
	a.reportRunning(ctx, svc, was, target.String())
	a.reportUnits(ctx, src, in, installed, perr == nil, target, units)
	return nil
}

// updateTarget is --version, or the newest release.
func (a *app) updateTarget(ctx context.Context, src *release.Source, o updateOpts) (release.Version, error) {
	if o.version != "" {
		v, err := release.ParseVersion(o.version)
		if err != nil {
			return v, usagef("--version %s: %v", o.version, err)
		}
		return v, nil
	}
	return src.Latest(ctx) // its errors name the tree and the file
}

func helperNote(was update.Running) string {
	if was.Helper {
		return " and banger-helper.service"
	}
	return ""
}

// confirm asks on a terminal, unless --yes; without a terminal it needs
// --yes.
func (a *app) confirm(o updateOpts, question string) error {
	if o.yes {
		return nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return usagef("banger update changes the installed binaries and asks first; its input is not a terminal, so add --yes to go ahead")
	}
	fmt.Fprintf(a.stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(a.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed; nothing was changed")
}

// fetchRelease downloads target's archive into a private temporary
// directory, where release.Download checks it against the signed sums,
// then extracts it into a staging directory inside the install's
// directory. Nothing lands beside the binaries before both checks hold.
// It returns the staged binaries and units by name.
func (a *app) fetchRelease(ctx context.Context, src *release.Source, in *update.Install, target release.Version) (staged, units map[string]string, cleanup func(), err error) {
	rel, err := src.Release(ctx, target) // its errors name the release and the tree
	if err != nil {
		return nil, nil, nil, err
	}
	tmp, err := os.MkdirTemp("", "banger-update-")
	if err != nil {
		return nil, nil, nil, fmt.Errorf("make a temporary directory: %w", err)
	}
	var stage string
	cleanup = func() {
		os.RemoveAll(tmp)
		if stage != "" {
			os.RemoveAll(stage)
		}
	}
	name := release.ArchiveName(target, runtime.GOARCH)
	archive, err := os.OpenFile(filepath.Join(tmp, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, cleanup, err
	}
	defer archive.Close()
	rep := newDownloadReporter(a, name)
	err = src.Download(ctx, rel, name, release.MaxArchiveSize, archive, rep)
	rep.finish(err)
	if err != nil && ctx.Err() != nil {
		return nil, nil, cleanup, fmt.Errorf("interrupted while downloading %s; nothing was changed", name)
	}
	if err != nil {
		return nil, nil, cleanup, err // it names the file, and says nothing was installed
	}
	if _, err := archive.Seek(0, 0); err != nil {
		return nil, nil, cleanup, err
	}
	if stage, err = in.Stage(); err != nil {
		return nil, nil, cleanup, err
	}
	files, err := release.Extract(archive, stage)
	if err != nil {
		return nil, nil, cleanup, fmt.Errorf("unpack %s into %s: %w; nothing was changed", name, in.Dir, err)
	}
	staged, units = map[string]string{}, map[string]string{}
	for _, b := range update.Binaries {
		staged[b] = files[b]
	}
	for _, u := range release.Units {
		units[u] = files[u]
	}
	return staged, units, cleanup, nil
}

// reportRunning says what runs after an update or a rollback.
func (a *app) reportRunning(ctx context.Context, svc *updateServices, was update.Running, v string) {
	if was.Helper {
		fmt.Fprintf(a.stdout, "banger-helper.service restarted on %s\n", v)
	}
	whose := ""
	if svc.sudo != nil {
		whose = " of " + svc.sudo.name
	}
	if !was.Daemon {
		fmt.Fprintf(a.stdout, "bangerd%s %s answered its check and was stopped again (it was not running); the CLI starts it when needed\n", whose, v)
		return
	}
	if info, ok := svc.daemonInfo(ctx); ok {
		fmt.Fprintf(a.stdout, "bangerd%s %s running (pid %d); running VMs kept running\n", whose, info.Version, info.PID)
	}
}

// reportUnits compares the new units with the installed version's and
// says how to reinstall them when they changed.
func (a *app) reportUnits(ctx context.Context, src *release.Source, in *update.Install, installed release.Version, isRelease bool, target release.Version, staged map[string]string) {
	if !isRelease {
		fmt.Fprintf(a.stdout, "The installed build %s was not a release, so whether the systemd units changed is unknown; see `banger update --check` or docs/update.md to reinstall them.\n", buildinfo.Version)
		return
	}
	old, err := releaseUnits(ctx, src, installed)
	if err != nil {
		fmt.Fprintf(a.stdout, "Whether the systemd units changed is unknown (%s: %v).\n", installed, err)
		return
	}
	cur := map[string][]byte{}
	for name, p := range staged {
		if b, err := os.ReadFile(p); err == nil {
			cur[name] = b
		}
	}
	prefix := ""
	if filepath.Base(in.Dir) == "bin" {
		prefix = filepath.Dir(in.Dir)
	}
	fmt.Fprint(a.stdout, update.UnitsHint(src.Base, target.String(), prefix, update.UnitsChanged(release.Units, old, cur)))
}

// updateRollback puts the .prev binaries back and restarts on them.
func (a *app) updateRollback(ctx context.Context, o updateOpts) error {
	in, unlock, err := a.locateForUpdate()
	if err != nil {
		return err
	}
	defer unlock()
	j, err := in.ReadJournal()
	if err != nil {
		return err
	}
	svc, err := a.newUpdateServices(in)
	if err != nil {
		return err
	}
	was, err := update.Survey(ctx, svc, os.Geteuid(), sudoCommand(in, o))
	if err != nil {
		return err
	}
	restored := j.State == update.StateRestored && !in.HasPrev()
	if j.State == update.StateLinking || (!in.HasPrev() && j.State != update.StateRollingBack && !restored) {
		_, err := in.RestorePrev() // says why there is nothing to restore
		return err
	}
	back := j.From
	if back == "" {
		back = "the previous version (the update journal does not say which)"
	}
	question := fmt.Sprintf("Put back %s in %s, and restart bangerd%s?", back, in.Dir, helperNote(was))
	if restored {
		question = fmt.Sprintf("The binaries of %s are back in %s but were not brought up. Restart bangerd%s on them?", back, in.Dir, helperNote(was))
	}
	if err := a.confirm(o, question); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	from := j.From
	if !restored {
		if from, err = in.RestorePrev(); err != nil {
			return err
		}
	}
	if err := update.BringUp(ctx, svc, was, from); err != nil {
		forward := ""
		if j.To != "" {
			forward = fmt.Sprintf(", or go forward again with `banger update --version %s`", j.To)
		}
		return fmt.Errorf("the binaries of %s are back in %s, but bringing them up failed: fix what follows and run `banger update --rollback` again to bring them up%s; what failed: %w", back, in.Dir, forward, err)
	}
	if err := in.MarkRolledBack(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "rolled back to %s in %s\n", back, in.Dir)
	a.reportRunning(ctx, svc, was, orWord(from, "the previous version"))
	return nil
}

func orWord(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// updateResume brings up the binaries of an update that was killed after
// its swap (journal "swapped", this banger is the new one), or rolls back
// when they do not come up.
func (a *app) updateResume(ctx context.Context, o updateOpts, in *update.Install, svc *updateServices, was update.Running, j update.Journal) error {
	if err := a.confirm(o, fmt.Sprintf("An update from %s to %s in %s was interrupted after its binaries were replaced. Bring %s up now (restart bangerd%s)?", orWord(j.From, "the previous version"), j.To, in.Dir, j.To, helperNote(was))); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := update.Resume(ctx, in, svc, was); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "the interrupted update to %s is finished in %s; the previous binaries are kept as <name>.prev (`banger update --rollback` puts them back)\n", j.To, in.Dir)
	a.reportRunning(ctx, svc, was, j.To)
	return nil
}
