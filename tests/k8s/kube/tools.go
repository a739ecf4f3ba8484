//go:build tools

// Package tools pins the Kubernetes binaries the end-to-end tests run.
// Built by ../build.sh; never compiled into anything else.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
