//go:build tools

// Package tools pins the etcd server the end-to-end tests run.
// Built by ../build.sh; never compiled into anything else.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
