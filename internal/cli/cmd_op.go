package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/rpc"
)

func (a *app) newOpCmd() *cobra.Command {
	var lsOut, showOut, waitOut outputFormat
	var all bool
	var limit int
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List operations, newest first",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			q := url.Values{}
			if !all {
				q.Set("limit", fmt.Sprint(limit))
			}
			var ops []rpc.Operation
			if err := c.Do(cmd.Context(), "GET", "/v1/ops?"+q.Encode(), nil, &ops); err != nil {
				return err
			}
			if lsOut.json() {
				return writeJSON(a.stdout, ops)
			}
			tw := newTable(a.stdout, "ID", "KIND", "TARGET", "STATE", "PHASE", "PROGRESS", "CREATED")
			for _, op := range ops {
				row(tw, op.ID, op.Kind, orDash(op.Target), op.State, orDash(op.Phase), progressText(op), ago(op.CreatedAt))
			}
			return tw.Flush()
		},
	}
	ls.Flags().BoolVarP(&all, "all", "a", false, "list every operation, not only the latest")
	ls.Flags().IntVarP(&limit, "limit", "n", 20, "how many operations to list")
	addOutputFlag(ls, &lsOut)

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one operation",
		Args:  exactArgs(1, "one operation id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var op rpc.Operation
			if err := c.Do(cmd.Context(), "GET", "/v1/ops/"+pathSegment(args[0]), nil, &op); err != nil {
				return err
			}
			if showOut.json() {
				return writeJSON(a.stdout, op)
			}
			a.printOp(op)
			return nil
		},
	}
	addOutputFlag(show, &showOut)

	wait := &cobra.Command{
		Use:   "wait ID",
		Short: "Follow an operation until it ends; Ctrl-C cancels it",
		Args:  exactArgs(1, "one operation id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := a.follow(cmd.Context(), args[0])
			if waitOut.json() && op.ID != "" {
				if werr := writeJSON(a.stdout, op); werr != nil {
					return werr
				}
			}
			return err
		},
	}
	addOutputFlag(wait, &waitOut)

	cancel := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a running operation",
		Args:  exactArgs(1, "one operation id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.daemon(cmd.Context())
			if err != nil {
				return err
			}
			var op rpc.Operation
			if err := c.Do(cmd.Context(), "POST", "/v1/ops/"+pathSegment(args[0])+"/cancel", nil, &op); err != nil {
				return err
			}
			if op.Terminal() {
				fmt.Fprintf(a.stdout, "%s already %s\n", op.ID, op.State)
				return nil
			}
			fmt.Fprintf(a.stdout, "%s: cancellation requested\n", op.ID)
			return nil
		},
	}
	return group("op", "List, follow and cancel long-running operations", ls, show, wait, cancel)
}

func (a *app) printOp(op rpc.Operation) {
	tw := newTable(a.stdout, "FIELD", "VALUE")
	row(tw, "id", op.ID)
	row(tw, "kind", op.Kind)
	row(tw, "target", orDash(op.Target))
	row(tw, "state", op.State)
	row(tw, "phase", orDash(op.Phase))
	row(tw, "progress", progressText(op))
	row(tw, "created", op.CreatedAt.Local().Format(time.RFC3339))
	row(tw, "updated", op.UpdatedAt.Local().Format(time.RFC3339))
	if !op.FinishedAt.IsZero() {
		row(tw, "finished", op.FinishedAt.Local().Format(time.RFC3339))
	}
	if op.Error != "" {
		row(tw, "error", op.Error)
	}
	_ = tw.Flush()
}

// follow renders an operation's progress until it ends. The first Ctrl-C
// asks the daemon to cancel it and keeps following until it has stopped; a
// second one leaves at once, with the operation going on in the daemon.
func (a *app) follow(ctx context.Context, id string) (rpc.Operation, error) {
	c, err := a.daemon(ctx)
	if err != nil {
		return rpc.Operation{}, err
	}
	ctx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt)
	defer signal.Stop(sigs)
	go func() {
		interrupts := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-sigs:
				interrupts++
				if interrupts > 1 {
					fmt.Fprintf(a.stderr, "\nbanger: stopped following %s; it may still be running (banger op show %s)\n", id, id)
					stopFollow()
					return
				}
				fmt.Fprintf(a.stderr, "\nbanger: cancelling %s (Ctrl-C again to stop waiting)\n", id)
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				if err := c.Do(cctx, "POST", "/v1/ops/"+pathSegment(id)+"/cancel", nil, nil); err != nil {
					a.warnf("cancel %s: %v", id, err)
				}
				cancel()
			}
		}
	}()

	r := newRenderer(a)
	var last rpc.Operation
	err = c.Stream(ctx, "GET", "/v1/ops/"+pathSegment(id)+"/watch", nil, func(raw json.RawMessage) error {
		var op rpc.Operation
		if err := json.Unmarshal(raw, &op); err != nil {
			return fmt.Errorf("decode progress of %s: %w", id, err)
		}
		last = op
		r.update(op)
		return nil
	})
	r.finish(last)
	if err != nil {
		return last, err
	}
	switch last.State {
	case rpc.StateSucceeded:
		return last, nil
	case rpc.StateFailed:
		return last, fmt.Errorf("%s %s (%s) failed: %s", last.Kind, last.Target, last.ID, last.Error)
	case rpc.StateCancelled:
		return last, fmt.Errorf("%s %s (%s) was cancelled: %s", last.Kind, last.Target, last.ID, last.Error)
	}
	return last, fmt.Errorf("lost track of %s while it was %s; follow it again with `banger op wait %s`", id, last.State, id)
}
