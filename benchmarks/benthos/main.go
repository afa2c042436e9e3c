// A Benthos v4 build with only the components the peer benchmark uses (io, kafka, pure):
// benchmarks/peer_benthos.py builds it into the project's cache folder with `go build`.
package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
