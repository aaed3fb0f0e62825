// Package preview is `kvinject inject`: it reads Pods and workloads as YAML
// and prints them as the webhook would admit them, by applying the very JSON
// patch the webhook answers with (webhook.Admit) to each pod template, so
// that fields this build does not know, comments aside, pass through.
package preview
