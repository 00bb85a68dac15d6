// Command grpclb-client is a stock grpc-go client that balances with the standard grpclb
// policy over a quaestor balancer, with no quaestor code. It calls
// quaestor.example.Work/DoWork in a loop and prints, for each call, the worker that answered
// ("worker HOST:PORT") or the error ("error CODE"), until it is killed.
//
// The balancer's address reaches grpclb through a manual resolver, as grpclb resolvers pass
// it; the service config selects the grpclb policy and names the service to ask for.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/grpclb"
	grpclbstate "google.golang.org/grpc/balancer/grpclb/state"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// rawCodec hands bytes through unchanged: the two messages are encoded by hand below, so
// the client needs no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func main() {
	balancer := flag.String("balancer", "", "host:port of the quaestor balancer")
	service := flag.String("service", "Worker", "the service to balance over")
	interval := flag.Duration("interval", 20*time.Millisecond, "pause between two calls")
	flag.Parse()
	if *balancer == "" {
		fmt.Fprintln(os.Stderr, "usage: grpclb-client -balancer HOST:PORT [-service NAME]")
		os.Exit(64)
	}

	r := manual.NewBuilderWithScheme("quaestor")
	r.InitialState(grpclbstate.Set(resolver.State{}, &grpclbstate.State{
		BalancerAddresses: []resolver.Address{{Addr: *balancer, ServerName: "quaestor-balancer"}},
	}))
	config := fmt.Sprintf(`{"loadBalancingConfig":[{"grpclb":{"serviceName":%q}}]}`, *service)
	conn, err := grpc.NewClient("quaestor:///"+*service,
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(config))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot create the client:", err)
		os.Exit(1)
	}
	defer conn.Close()

	// WorkRequest { milliseconds = 1 }
	request := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var response []byte
		err := conn.Invoke(ctx, "/quaestor.example.Work/DoWork", &request, &response, grpc.ForceCodec(rawCodec{}))
		cancel()
		if err != nil {
			fmt.Println("error", status.Code(err))
		} else {
			fmt.Println("worker", workerOf(response))
		}
		time.Sleep(*interval)
	}
}

// workerOf reads WorkResponse.worker (field 1, a string).
func workerOf(message []byte) string {
	for len(message) > 0 {
		number, kind, n := protowire.ConsumeTag(message)
		if n < 0 {
			return "?"
		}
		message = message[n:]
		if number == 1 && kind == protowire.BytesType {
			value, m := protowire.ConsumeBytes(message)
			if m < 0 {
				return "?"
			}
			return string(value)
		}
		m := protowire.ConsumeFieldValue(number, kind, message)
		if m < 0 {
			return "?"
		}
		message = message[m:]
	}
	return "?"
}
