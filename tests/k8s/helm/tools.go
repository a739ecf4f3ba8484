//go:build tools

// Package tools pins the helm CLI the end-to-end tests run.
// Built by ../build.sh; never compiled into anything else.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
