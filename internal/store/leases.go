package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// AcquireLease returns vmID's address, choosing one with pick (given every
// address in use) when it has none. The choice and the insert are one
// transaction, and addresses are unique, so concurrent callers never get
// the same one.
func (s *Store) AcquireLease(ctx context.Context, vmID string, pick func(used []netip.Addr) (netip.Addr, error)) (netip.Addr, error) {
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := s.acquireLease(ctx, vmID, pick)
		if err == nil || !isUnique(err) {
			return addr, err
		}
	}
	return netip.Addr{}, fmt.Errorf("lease for VM %s: addresses kept colliding; try again", vmID)
}

func (s *Store) acquireLease(ctx context.Context, vmID string, pick func(used []netip.Addr) (netip.Addr, error)) (netip.Addr, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return netip.Addr{}, err
	}
	defer tx.Rollback()
	var have string
	err = tx.QueryRowContext(ctx, `SELECT ip FROM leases WHERE vm_id = ?`, vmID).Scan(&have)
	if err == nil {
		return netip.ParseAddr(have)
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return netip.Addr{}, err
	}
	rows, err := tx.QueryContext(ctx, `SELECT ip FROM leases`)
	if err != nil {
		return netip.Addr{}, err
	}
	var used []netip.Addr
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			rows.Close()
			return netip.Addr{}, err
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			used = append(used, a)
		}
	}
	rows.Close()
	addr, err := pick(used)
	if err != nil {
		return netip.Addr{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO leases (vm_id, ip, created_at) VALUES (?, ?, ?)`,
		vmID, addr.String(), formatTime(time.Now())); err != nil {
		return netip.Addr{}, err
	}
	return addr, tx.Commit()
}

// ReleaseLease gives vmID's address back; releasing none is not an error.
func (s *Store) ReleaseLease(ctx context.Context, vmID string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM leases WHERE vm_id = ?`, vmID)
	return err
}

// ListLeases returns every lease by VM id.
func (s *Store) ListLeases(ctx context.Context) (map[string]netip.Addr, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm_id, ip FROM leases`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]netip.Addr{}
	for rows.Next() {
		var id, ip string
		if err := rows.Scan(&id, &ip); err != nil {
			return nil, err
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("lease of %s: bad address %q", id, ip)
		}
		out[id] = a
	}
	return out, rows.Err()
}
