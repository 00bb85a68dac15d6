// Command orca-server is a stock grpc-go server with ORCA enabled and no quaestor code: it
// serves grpc.health.v1 (SERVING for "" and for -service) and grpc-go's own
// xds.service.orca.v3.OpenRcaService (the orca package), whose out-of-band reports carry
// -utilization as application_utilization and -cpu as cpu_utilization. It prints
// "listening on 127.0.0.1:PORT" once it serves, and serves until it is killed.
//
// SIGUSR1 sets the application utilization to -on-usr1 (and prints "utilization X"), so a
// test can change the load a running server reports.
//
// grpc-go's ORCA service sends a report when a stream opens and then every reporting
// interval, which it never lets under 30 s (its MinReportingInterval floor).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/orca"
)

func main() {
	port := flag.Int("port", 0, "port to listen on (0: any free one)")
	service := flag.String("service", "Worker", "the service whose health is SERVING")
	utilization := flag.Float64("utilization", 0, "application_utilization to report")
	cpu := flag.Float64("cpu", 0, "cpu_utilization to report")
	onUsr1 := flag.Float64("on-usr1", 0, "application_utilization to report after SIGUSR1")
	flag.Parse()

	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot listen:", err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	healthServer := health.NewServer()
	healthServer.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthServer.SetServingStatus(*service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(server, healthServer)

	recorder := orca.NewServerMetricsRecorder()
	recorder.SetApplicationUtilization(*utilization)
	recorder.SetCPUUtilization(*cpu)
	if err := orca.Register(server, orca.ServiceOptions{ServerMetricsProvider: recorder}); err != nil {
		fmt.Fprintln(os.Stderr, "cannot register ORCA:", err)
		os.Exit(1)
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGUSR1)
	go func() {
		for range signals {
			recorder.SetApplicationUtilization(*onUsr1)
			fmt.Printf("utilization %v\n", *onUsr1)
		}
	}()

	fmt.Printf("listening on %s\n", listener.Addr())
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
