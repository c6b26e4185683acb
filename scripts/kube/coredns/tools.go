//go:build tools

// Package tools pins github.com/coredns/coredns (its root package is the coredns command) in this
// module's go.mod and go.sum; scripts/build-kubernetes.sh builds it with `go build
// github.com/coredns/coredns`.
package tools

import _ "github.com/coredns/coredns"
