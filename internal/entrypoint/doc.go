// Package entrypoint reads an image's ENTRYPOINT and CMD from its registry
// and gives them as the pod annotation kvinject.io/entrypoint-<container>,
// the program the exec wrapper kvinject-exec runs for a container that has
// no command of its own. The webhook never asks a registry: this package is
// for the tools users run (kvinject entrypoint, kvinject convert-eso
// --resolve-entrypoints), with their own registry credentials and CAs.
//
// Kubernetes runs a container as follows (the four cases):
//
//	command  args   runs
//	-        -      the image's ENTRYPOINT, then its CMD
//	-        set    the image's ENTRYPOINT, then the container's args
//	set      -      the container's command (ENTRYPOINT and CMD ignored)
//	set      set    the container's command, then its args
//
// So the annotation holds ENTRYPOINT followed by CMD for a container without
// args, and ENTRYPOINT alone (Request.EntrypointOnly) for one with args; a
// container with a command needs none.
package entrypoint
