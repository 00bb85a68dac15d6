// Command go-client is a stock grpc-go client that balances over a quaestor balancer, with no
// quaestor code and no generated code, through one of the two protocols stock gRPC clients
// speak to it:
//
//   - grpclb, with -balancer HOST:PORT [-service NAME]: the balancer's address reaches the
//     grpclb policy through a manual resolver, as grpclb resolvers pass it, and the service
//     config selects the grpclb policy and names the service to ask for;
//   - xDS, with -target xds:///NAME: grpc reads the bootstrap file naming the balancer (its ADS
//     server) from the GRPC_XDS_BOOTSTRAP environment variable.
//
// It calls quaestor.example.Work/DoWork in a loop and prints, for each call, the worker that
// answered ("worker HOST:PORT") or the error ("error CODE", the canonical status name, e.g.
// UNAVAILABLE, with the details on stderr), until it is killed.
//
// With -schedule FILE it is instead a client of the end-to-end balancing benchmark
// (cli/benches/e2e.rs): it calls until -warmup distinct workers have answered, prints
// "ready", then replays the open-loop arrival schedule of FILE (one arrival a line, in
// microseconds from the start) with one call per arrival, whatever is still in flight, and
// writes one line per call to -out: "LATENCY_US CODE WORKER", the latency counted from the
// scheduled arrival, CODE the gRPC status code as a number (0 = OK), WORKER "-" when the
// call failed.
//
// In xDS mode, tests/xds-java and tests/xds-clients/grpcio_client.py take the same flags and
// print the same lines.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	_ "google.golang.org/grpc/balancer/grpclb" // the grpclb policy
	grpclbstate "google.golang.org/grpc/balancer/grpclb/state"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	_ "google.golang.org/grpc/xds" // the xds resolver and the xDS balancers
	"google.golang.org/protobuf/encoding/protowire"
)

const usage = "usage: go-client (-balancer HOST:PORT [-service NAME] | -target xds:///NAME) [-schedule FILE -out FILE]"

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
	balancer := flag.String("balancer", "", "grpclb: host:port of the quaestor balancer")
	service := flag.String("service", "Worker", "grpclb: the service to balance over")
	target := flag.String("target", "", "xDS: xds:///NAME, the listener to ask the management server for (bootstrap in $GRPC_XDS_BOOTSTRAP)")
	interval := flag.Duration("interval", 20*time.Millisecond, "pause between two calls")
	schedule := flag.String("schedule", "", "replay this arrival schedule (microseconds, one a line) instead of calling in a loop")
	out := flag.String("out", "", "with -schedule: where to write one line per call")
	warmup := flag.Int("warmup", 1, "with -schedule: distinct workers that must answer before the replay")
	deadline := flag.Duration("deadline", 5*time.Second, "deadline of each call")
	flag.Parse()
	if (*balancer == "") == (*target == "") {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(64)
	}

	conn, err := dial(*balancer, *service, *target)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot create the client:", err)
		os.Exit(1)
	}
	defer conn.Close()

	// WorkRequest { milliseconds = 1, service_name = the service balanced over }, so that the
	// call counts in the load of that service.
	name := *service
	if *target != "" {
		name = (*target)[strings.LastIndex(*target, "/")+1:]
	}
	request := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	request = protowire.AppendString(protowire.AppendTag(request, 2, protowire.BytesType), name)
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), *deadline)
		defer cancel()
		var response []byte
		err := conn.Invoke(ctx, "/quaestor.example.Work/DoWork", &request, &response, grpc.ForceCodec(rawCodec{}))
		if err != nil {
			return "", err
		}
		return workerOf(response), nil
	}
	if *schedule != "" {
		if *out == "" {
			fmt.Fprintln(os.Stderr, "-schedule needs -out FILE")
			os.Exit(64)
		}
		if err := replay(call, *schedule, *out, *warmup); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	for {
		worker, err := call()
		if err != nil {
			fmt.Println("error", rpccode.Code_name[int32(status.Code(err))])
			fmt.Fprintln(os.Stderr, "call failed:", err)
		} else {
			fmt.Println("worker", worker)
		}
		time.Sleep(*interval)
	}
}

// dial makes the channel: grpclb over the balancer at `balancer` for `service` when
// `balancer` is set, else xDS on `target`.
func dial(balancer, service, target string) (*grpc.ClientConn, error) {
	credentials := grpc.WithTransportCredentials(insecure.NewCredentials())
	if balancer == "" {
		return grpc.NewClient(target, credentials)
	}
	r := manual.NewBuilderWithScheme("quaestor")
	r.InitialState(grpclbstate.Set(resolver.State{}, &grpclbstate.State{
		BalancerAddresses: []resolver.Address{{Addr: balancer, ServerName: "quaestor-balancer"}},
	}))
	config := fmt.Sprintf(`{"loadBalancingConfig":[{"grpclb":{"serviceName":%q}}]}`, service)
	return grpc.NewClient("quaestor:///"+service,
		grpc.WithResolvers(r),
		credentials,
		grpc.WithDefaultServiceConfig(config))
}

// replay warms up until `warmup` distinct workers answered (at most 60 s), then makes one
// call at each arrival of the schedule file and writes every call's outcome to `out`.
func replay(call func() (string, error), schedule, out string, warmup int) error {
	text, err := os.ReadFile(schedule)
	if err != nil {
		return err
	}
	var arrivals []time.Duration
	for n, line := range strings.Fields(string(text)) {
		us, err := strconv.ParseInt(line, 10, 64)
		if err != nil {
			return fmt.Errorf("%s:%d: not a number of microseconds: %q", schedule, n+1, line)
		}
		arrivals = append(arrivals, time.Duration(us)*time.Microsecond)
	}

	seen := map[string]bool{}
	for giveUp := time.Now().Add(60 * time.Second); len(seen) < warmup; {
		if time.Now().After(giveUp) {
			return fmt.Errorf("warm-up: only %d of %d workers answered within 60 s", len(seen), warmup)
		}
		if worker, err := call(); err == nil {
			seen[worker] = true
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	fmt.Println("ready")

	type outcome struct {
		latency time.Duration
		code    uint32
		worker  string
	}
	outcomes := make([]outcome, len(arrivals))
	var calls sync.WaitGroup
	start := time.Now()
	for i, at := range arrivals {
		time.Sleep(time.Until(start.Add(at)))
		calls.Add(1)
		go func() {
			defer calls.Done()
			worker, err := call()
			o := outcome{latency: time.Since(start.Add(at)), code: uint32(status.Code(err)), worker: worker}
			if err != nil {
				o.worker = "-"
			}
			outcomes[i] = o
		}()
	}
	calls.Wait()

	file, err := os.Create(out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(file)
	for _, o := range outcomes {
		fmt.Fprintf(w, "%d %d %s\n", o.latency.Microseconds(), o.code, o.worker)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return file.Close()
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
