package agent

import (
	"context"

	"banger/internal/guest/proto"
)

// resumed serves a resumed request: the hook gives the clone its identity
// and the answer lists every duty, failed ones included (the host turns
// those into an error), with the new SSH host public keys.
func (s *server) resumed(ctx context.Context, pc *proto.Conn, f proto.Frame) error {
	if s.opts.Resume == nil {
		return proto.Errorf(proto.CodeNotSupported, "resume is not supported by this agent")
	}
	req, err := proto.DecodeResumedRequest(f.Payload)
	if err != nil {
		return err
	}
	res := s.opts.Resume(ctx, req)
	for _, st := range res.Failed() {
		s.opts.Logf("agent: resumed: %s failed: %s", st.Duty, st.Error)
	}
	return pc.WriteJSON(proto.TypeOK, res)
}
