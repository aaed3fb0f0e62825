// Package benchkit is what the pod start (test/bench/podstart) and cluster
// cache (test/bench/cache) benchmarks share, kept in one place so that
// their numbers stay comparable: the cache benchmark's direct rollout is
// meant to cost what podstart's 10-secret row costs, and its ESO rows are
// podstart's ESO replay.
//
// It owns:
//   - the emulated Azure side both measure against: the tenant, the
//     workload identity federated with the pods' ServiceAccount and ESO's,
//     the vault and its sweep secrets, and starting the issuer and the
//     emulator (world.go);
//   - building the agent as the Dockerfile does, the init container's
//     wiring, and what an agent run leaves behind (agent.go);
//   - reading a process's memory from /proc/PID/status (proc.go);
//   - the emulator's traffic counters and their medians (traffic.go);
//   - External Secrets Operator's reconcile in its default mode, replayed
//     with the unmodified MSAL library (eso.go);
//   - rewriting a program's generated section of a Markdown file, and the
//     units the sections share (section.go, format.go).
//
// What only one benchmark does (the naive SDK baseline, the refresh
// sidecar, the cache replicas, each report's wording) stays in its
// program. Linux only, like the benchmarks: it reads /proc.
package benchkit
