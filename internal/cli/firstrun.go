package cli

import (
	"context"
	"fmt"

	"github.com/dustin/go-humanize"

	"banger/internal/catalog"
	"banger/internal/rpc"
)

// firstRunNotice says, before `vm run` creates its VM, when the image is
// not here yet and bangerd must pull or build it first, and about how long
// that takes: on a fresh host the first VM otherwise waits minutes with no
// word of why. image "" is the configured default image. It says nothing
// when the image is here, is not a catalog image, or cannot be checked
// (the create that follows reports those errors).
func (a *app) firstRunNotice(ctx context.Context, image string) {
	if a.quiet {
		return
	}
	if image == "" {
		l, err := a.config()
		if err != nil {
			return
		}
		image = l.Config.DefaultImageName
	}
	cat, err := catalog.LoadImages()
	if err != nil {
		return
	}
	e, ok := cat.Lookup(image)
	if !ok {
		return
	}
	c, err := a.daemon(ctx)
	if err != nil {
		return
	}
	var im rpc.Image
	if err := c.Do(ctx, "GET", "/v1/images/"+pathSegment(image), nil, &im); !rpc.IsCode(err, rpc.CodeNotFound) {
		return
	}
	if msg := firstRunText(e); msg != "" {
		fmt.Fprintln(a.stderr, "banger: "+msg)
	}
}

// buildMinutes is how long building a catalog image takes, as a range:
// measured on Debian 12 (2 cores, a fast mirror) at about a minute for the
// default image (debootstrap 49s or mmdebstrap 38s, mkfs 1s, its kernel a
// few seconds), 2 minutes for the whole image build under heavy load; a
// slow network or disk makes it several.
const buildMinutes = "1 to 5 minutes"

// firstRunText is what the first VM of catalog image e is told: that the
// image comes first, how, and about how long it takes.
func firstRunText(e catalog.Entry) string {
	const once = "; this happens once, and later VMs of it start in seconds"
	switch {
	case e.Bundle != nil:
		return fmt.Sprintf("image %s is not here yet: bangerd downloads it first (%s, about a minute on a fast link; if the download fails it builds it, %s)%s",
			e.Name, humanize.IBytes(uint64(max(e.Bundle.Size, 0))), buildMinutes, once)
	case e.Build != nil && e.Build.Kind == "debootstrap":
		how := "debootstrap"
		if s := e.Build.Params["suite"]; s != "" {
			how += " of Debian " + s
		}
		return fmt.Sprintf("image %s is not here yet: bangerd builds it first (%s, then an ext4 image), which takes about %s depending on the network and the disk%s",
			e.Name, how, buildMinutes, once)
	case e.Build != nil:
		return fmt.Sprintf("image %s is not here yet: bangerd builds it first, which takes minutes%s", e.Name, once)
	}
	return ""
}
