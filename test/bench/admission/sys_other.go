//go:build !linux

package main

import (
	"errors"
	"syscall"
)

func dieWithParent() *syscall.SysProcAttr { return nil }

func mountTmpfs(string) error { return errors.New("private mount namespaces need Linux") }
