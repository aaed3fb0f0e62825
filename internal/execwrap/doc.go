// Package execwrap is the exec wrapper kvinject-exec: what the webhook
// writes into a container's command and what the wrapper makes of it.
//
// The wrapper is the container's command. The kubelet has already expanded
// the container's command and args, and its env values, with the variables
// it knows. A variable kvinject delivers through the wrapper is declared in
// the container's env with Placeholder(NAME) as its value, in the place its
// own declaration had (or last), so the kubelet's expansion puts the
// placeholder wherever it would have put the value: in the argv, in env
// values that use $(NAME), nowhere for $$(NAME) or $(UNKNOWN). The wrapper
// reads the values from the env file the agent wrote, puts them where the
// placeholders are, and execs the program: the argv the kubelet would have
// given it, and the environment it would have had.
//
// It imports no Kubernetes package, no Azure SDK and nothing that reaches
// the network: the wrapper binary stays small and does one file read.
package execwrap
