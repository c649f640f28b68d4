package progress

import (
	"encoding/json"
	"fmt"
)

// Unit is the unit of a progress count. Only the constants are valid: the
// store refuses any other value, JSON and text decoding refuse it, and
// opstate drops it with a log line.
type Unit string

// Progress units.
const (
	None  Unit = ""      // no count: the phase only says what it does
	Bytes Unit = "bytes" // a byte count: downloads, copies
	Items Unit = "items" // a count of things: packages, layers, files
)

// Valid reports whether u is one of the Unit constants.
func (u Unit) Valid() bool { return u == None || u == Bytes || u == Items }

// ParseUnit returns the Unit named s, or an error naming the valid ones.
func ParseUnit(s string) (Unit, error) {
	u := Unit(s)
	if !u.Valid() {
		return None, fmt.Errorf("progress unit %q is not one of %q, %q or empty", s, Bytes, Items)
	}
	return u, nil
}

// UnmarshalText refuses a unit outside the set, so that a peer that sends
// one fails loudly instead of showing a count that means nothing.
func (u *Unit) UnmarshalText(b []byte) error {
	v, err := ParseUnit(string(b))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// UnmarshalJSON decodes a JSON string through UnmarshalText.
func (u *Unit) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("progress unit: %w", err)
	}
	return u.UnmarshalText([]byte(s))
}

// Reporter is how long work reports. *opstate.Progress satisfies it.
type Reporter interface {
	// Phase names the step now under way and resets the count.
	Phase(name string)
	// SetTotal announces the amount of work of the current phase in unit;
	// 0 means the total is not known (the count is still shown).
	SetTotal(total int64, unit Unit)
	// Add records n more units done.
	Add(n int64)
}

// Nop is a Reporter that reports nothing.
type Nop struct{}

func (Nop) Phase(string)         {}
func (Nop) SetTotal(int64, Unit) {}
func (Nop) Add(int64)            {}

// OrNop returns r, or Nop when r is nil.
func OrNop(r Reporter) Reporter {
	if r == nil {
		return Nop{}
	}
	return r
}
