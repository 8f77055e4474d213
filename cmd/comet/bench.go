package main

import (
	"fmt"
	"io"
)

func runBench(args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("%w: comet bench is not built yet", errUsage)
}
