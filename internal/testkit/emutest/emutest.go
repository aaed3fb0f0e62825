// Package emutest sets up the Entra ID and Key Vault emulator
// (internal/azemu) for a test: one service-account issuer for the whole test
// binary (RSA key generation is slow under -race), and emulators that trust
// it, each closed when its test ends.
package emutest

import (
	"sync"
	"testing"

	"github.com/kvinject/kvinject/internal/azemu"
	"github.com/kvinject/kvinject/internal/testkit/oidctest"
)

var shared struct {
	once sync.Once
	iss  *oidctest.Issuer
	err  error
}

// Issuer is the test binary's service-account issuer, made on first use.
// TestMain closes it with CloseIssuer.
func Issuer(t testing.TB) *oidctest.Issuer {
	t.Helper()
	shared.once.Do(func() { shared.iss, shared.err = oidctest.New(oidctest.Options{}) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.iss
}

// CloseIssuer closes the issuer, when one was made: the end of TestMain.
func CloseIssuer() {
	if shared.iss != nil {
		_ = shared.iss.Close()
	}
}

// Start starts an emulator holding cfg that trusts Issuer's tokens, with a
// fixed seed (its faults repeat run to run), and closes it when t ends.
// Each of opts adjusts the options first.
func Start(t testing.TB, cfg azemu.Config, opts ...func(*azemu.Options)) *azemu.Emulator {
	t.Helper()
	o := azemu.Options{Config: cfg, IssuerCAPEM: Issuer(t).CAPEM(), Seed: 1}
	for _, f := range opts {
		f(&o)
	}
	emu, err := azemu.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return emu
}
