// Command pie releases its executable's pages, then runs code that reads
// the read-only data a position-independent executable's loader relocated
// (interface tables, type descriptors): TestReleaseExecutablePIE builds it
// with -buildmode=pie.
package main

import (
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/kvinject/kvinject/internal/residency"
)

type shape interface{ area() float64 }

type square struct{ side float64 }

func (s square) area() float64 { return s.side * s.side }

func main() {
	for i := range 3 {
		if _, err := residency.ReleaseExecutable(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		var shapes []shape
		for j := range 5 {
			shapes = append(shapes, square{float64(i + j)})
		}
		sort.Slice(shapes, func(a, b int) bool { return shapes[a].area() > shapes[b].area() })
		m := map[string]any{"shape": shapes[0], "err": errors.New("x")}
		fmt.Printf("%d %v %T %v\n", i, m["shape"].(shape).area(), m["shape"], m["err"])
	}
}
