// Package spec defines the normalised injection spec that the webhook builds
// from a pod's annotations and the agent receives as KVINJECT_SPEC, together
// with the names of the contract (annotations, injected objects, environment
// variables) and the parsers both sides share.
//
// Everything a user can type is parsed here once: the webhook validates at
// admission so that a bad annotation is a denial, never a failing init
// container, and the agent trusts only what carries the current Version.
package spec
