package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"banger/internal/guest/proto"
)

// Types of the resumed request, so callers need not import proto.
type (
	ResumedRequest = proto.ResumedRequest
	ResumedNetwork = proto.ResumedNetwork
	ResumedResult  = proto.ResumedResult
	ResumedStep    = proto.ResumedStep
)

// CapResume is the capability in the agent's hello (Client.Hello) of an
// agent that serves Resumed: check it before taking a snapshot that
// clones will resume from.
const CapResume = proto.CapResume

// ErrAgentTooOld is matched (errors.Is) by Resumed's error when the
// guest's agent does not serve resumed requests.
var ErrAgentTooOld = errors.New("this guest's agent is too old for resume (rebuild the image)")

// DefaultResumeEntropy is how many bytes of randomness Resumed sends when
// the request carries none: the size of the kernel's input pool.
const DefaultResumeEntropy = 256

// ResumeError lists the duties of a resume that failed in the guest.
type ResumeError struct {
	Failed []ResumedStep
}

func (e *ResumeError) Error() string {
	var parts []string
	for _, s := range e.Failed {
		parts = append(parts, s.Duty+": "+s.Error)
	}
	return fmt.Sprintf("the guest could not take its new identity (%d of its duties failed): %s",
		len(e.Failed), strings.Join(parts, "; "))
}

// Resumed tells the agent of a VM resumed from a snapshot who it now is
// (see proto.ResumedRequest) and returns what each duty did and the
// guest's new SSH host public keys. An empty req.Entropy is filled with
// DefaultResumeEntropy bytes from crypto/rand and a zero req.UnixNano with
// the host's time now. When some duty failed, the result is returned
// with a *ResumeError; an agent that does not serve the request gives an
// error matching ErrAgentTooOld.
func (c *Client) Resumed(ctx context.Context, req ResumedRequest) (ResumedResult, error) {
	if len(req.Entropy) == 0 {
		req.Entropy = make([]byte, DefaultResumeEntropy)
		if _, err := io.ReadFull(rand.Reader, req.Entropy); err != nil {
			return ResumedResult{}, fmt.Errorf("resumed: read the host's randomness: %w", err)
		}
	}
	if req.UnixNano == 0 {
		req.UnixNano = time.Now().UnixNano()
	}
	if err := req.Validate(); err != nil {
		return ResumedResult{}, err
	}
	s, err := c.start(ctx, proto.TypeResumed, req)
	if err != nil {
		if refusedAsUnknown(err) {
			return ResumedResult{}, fmt.Errorf("resumed: the guest agent refused it (%v): %w", err, ErrAgentTooOld)
		}
		return ResumedResult{}, fmt.Errorf("resumed: %w", err)
	}
	defer s.close()
	if !s.agent.Has(proto.CapResume) {
		return ResumedResult{}, fmt.Errorf("resumed: the guest agent (version %s) does not serve it: %w", s.agent.Version, ErrAgentTooOld)
	}
	res, err := s.resumedResult()
	if err != nil {
		return ResumedResult{}, fmt.Errorf("resumed: %w", err)
	}
	if failed := res.Failed(); len(failed) > 0 {
		return res, &ResumeError{Failed: failed}
	}
	return res, nil
}

func (s *stream) resumedResult() (ResumedResult, error) {
	f, err := s.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return ResumedResult{}, s.cause(errors.New("guest agent closed the stream without answering"))
		}
		return ResumedResult{}, s.cause(err)
	}
	switch f.Type {
	case proto.TypeOK:
		return proto.DecodeResumedResult(f.Payload)
	case proto.TypeError:
		return ResumedResult{}, proto.DecodeError(f)
	default:
		return ResumedResult{}, &proto.MalformedFrameError{Reason: fmt.Sprintf("expected an answer, got a %s frame", f.Type)}
	}
}

// refusedAsUnknown reports whether err is an agent's refusal of a request
// it does not know. The hello's capabilities usually say so first, but an
// old agent may answer and close before the request is written whole, and
// then its answer is all there is: "unknown frame type" (a frame reader
// that predates the type) or not-supported (no hook wired).
func refusedAsUnknown(err error) bool {
	var re *proto.RemoteError
	if !errors.As(err, &re) {
		return false
	}
	return re.Code == proto.CodeNotSupported ||
		(re.Code == proto.CodeMalformedFrame && strings.Contains(re.Message, "unknown frame type"))
}
