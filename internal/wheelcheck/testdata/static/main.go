// A minimal program the tests build with CGO_ENABLED=0: a real static executable
// for this machine, like the ones the wheels carry.
package main

func main() {}
