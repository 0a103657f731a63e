package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// failingChallenges is a shared store whose GetChallenge answers err, or
// keyAuth when err is nil.
type failingChallenges struct {
	store.Store
	keyAuth string
	err     error
}

func (f failingChallenges) GetChallenge(context.Context, string) (string, error) {
	return f.keyAuth, f.err
}

// TestFleetChallengesMiss: a token the copy lacks is read from the
// database; when the database fails (slow, broken) the endpoint is told
// why instead of "not found", which would fail the order as if the token
// did not exist; when it is down, or has no such token, it is not found.
func TestFleetChallengesMiss(t *testing.T) {
	local, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = local.Close() })
	ctx := t.Context()
	if err := local.PutChallenge(ctx, "in-copy", "ka-copy", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	slow := fmt.Errorf("get challenge: %w", context.DeadlineExceeded)
	down := fmt.Errorf("the fleet's database: %w", store.ErrUnavailable)
	for _, tc := range []struct {
		desc     string
		token    string
		shared   failingChallenges
		want     string
		wantErr  error
		notFound bool
	}{
		{desc: "in the copy", token: "in-copy", shared: failingChallenges{err: slow}, want: "ka-copy"},
		{desc: "only in the database", token: "t1", shared: failingChallenges{keyAuth: "ka-db"}, want: "ka-db"},
		{desc: "nowhere", token: "t2", shared: failingChallenges{err: store.ErrNotFound}, notFound: true},
		{desc: "database down", token: "t3", shared: failingChallenges{err: down}, notFound: true},
		{desc: "database too slow", token: "t4", shared: failingChallenges{err: slow}, wantErr: context.DeadlineExceeded},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := fleetChallenges{Store: local, shared: tc.shared}.GetChallenge(ctx, tc.token)
			switch {
			case tc.notFound:
				if !errors.Is(err, store.ErrNotFound) {
					t.Fatalf("got %q, %v; want not found", got, err)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) || errors.Is(err, store.ErrNotFound) {
					t.Fatalf("got %q, %v; want an error wrapping %v and not 'not found'", got, err, tc.wantErr)
				}
			case err != nil || got != tc.want:
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
