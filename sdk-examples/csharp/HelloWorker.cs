// A C# worker that reports its health and load through libquaestor (bindings/csharp), driven
// over stdin so that tests (ffi/tests/csharp.rs) and people can watch the reports change.
//
//   mcs -target:library -out:Quaestor.Native.dll bindings/csharp/*.cs
//   mcs -r:Quaestor.Native.dll -out:HelloWorker.exe sdk-examples/csharp/HelloWorker.cs
//   LD_LIBRARY_PATH=target/debug mono HelloWorker.exe PORT [ETCD_ENDPOINTS ADVERTISED_HOST]
//   quaestor load 127.0.0.1:PORT Worker
//
// It serves health and load for the service `Worker` (capacity 4) on 127.0.0.1:PORT (0: a
// free port), registers in etcd when given its endpoints, prints `listening on
// 127.0.0.1:PORT`, then reads one command a line from stdin and answers each with `ok N` (N:
// requests in flight):
//   start        a request starts (and stays in flight)
//   end          one ends
//   not-serving  the service turns NOT_SERVING
//   serving      ... and SERVING again
//   memory P     the host's memory is reported as P percent in use (negative: measured)
//   discover B   asks the balancer at B (host:port) which worker of `Worker` to call, through
//                one DiscoveryClient kept for every such command; prints `found HOST:PORT`
//                or `found none`
//   quit         frees the reporter (deregisters, closes the port) and exits 0
// At the end of stdin it waits for Ctrl-C (SIGINT: Console.CancelKeyPress), then does as
// `quit`; on SIGTERM .NET frees the reporter on the way out (AppDomain.ProcessExit). Mono
// raises CancelKeyPress only on a terminal and not ProcessExit on SIGTERM: otherwise either
// signal ends it at once, and an etcd registration then ends with its lease (10 s).
// Errors: a message on stderr, exit code 1.

using System;
using System.Globalization;
using System.Threading;
using Quaestor.Native;

public static class HelloWorker
{
    private const string Usage = "usage: HelloWorker.exe PORT [ETCD_ENDPOINTS ADVERTISED_HOST]";

    public static int Main(string[] args)
    {
        int port;
        if ((args.Length != 1 && args.Length != 3)
            || !int.TryParse(args[0], NumberStyles.None, CultureInfo.InvariantCulture, out port)
            || port > 65535)
        {
            Console.Error.WriteLine(Usage);
            return 1;
        }
        try
        {
            return Run(port, args.Length == 3 ? args[1] : null, args.Length == 3 ? args[2] : null);
        }
        catch (QuaestorException e)
        {
            Console.Error.WriteLine("HelloWorker: {0} ({1})", e.Message, e.Code);
            return 1;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("HelloWorker: {0}", e);
            return 1;
        }
    }

    private static int Run(int port, string etcdEndpoints, string advertisedHost)
    {
        DiscoveryClient client = null;  // made by the first `discover`
        using (var reporter = new LoadReporter("127.0.0.1", port))
        using (var load = reporter.AddService("Worker", 4))
        {
            if (etcdEndpoints != null)
            {
                reporter.Register(etcdEndpoints, advertisedHost);
            }
            // Killed by SIGTERM on .NET: deregister and close the port on the way out.
            AppDomain.CurrentDomain.ProcessExit += (sender, e) => reporter.Dispose();

            Console.WriteLine("listening on 127.0.0.1:{0}", reporter.Port);
            Console.Out.Flush();

            string line;
            while ((line = Console.In.ReadLine()) != null)
            {
                string command = line.Trim();
                if (command.StartsWith("discover ", StringComparison.Ordinal))
                {
                    if (client == null)
                    {
                        client = new DiscoveryClient(command.Substring(9));
                    }
                    var found = client.DiscoverTop("Worker", 1);
                    Console.WriteLine(found.Count == 0 ? "found none" : "found " + found[0]);
                    Answer(load);
                    continue;
                }
                if (command.StartsWith("memory ", StringComparison.Ordinal))
                {
                    load.ServerMemoryUsagePercent =
                        double.Parse(command.Substring(7), CultureInfo.InvariantCulture);
                    Answer(load);
                    continue;
                }
                switch (command)
                {
                    case "start":
                        load.StartRequest();
                        break;
                    case "end":
                        load.EndRequest();
                        break;
                    case "not-serving":
                        load.SetServing(false);
                        break;
                    case "serving":
                        load.SetServing(true);
                        break;
                    case "quit":
                        // The port is closed once `ok` is out; the load handle outlives the reporter.
                        if (client != null)
                        {
                            client.Dispose();
                        }
                        reporter.Dispose();
                        Answer(load);
                        return 0;
                    case "":
                        continue;
                    default:
                        Console.Error.WriteLine(
                            "HelloWorker: unknown command {0} (start, end, not-serving, serving, memory P, discover B, quit)",
                            line.Trim());
                        continue;
                }
                Answer(load);
            }

            // End of stdin: wait for Ctrl-C, then stop as on `quit` (the using blocks).
            using (var interrupted = new ManualResetEvent(false))
            {
                ConsoleCancelEventHandler onInterrupt = (sender, e) =>
                {
                    e.Cancel = true;
                    interrupted.Set();
                };
                Console.CancelKeyPress += onInterrupt;
                interrupted.WaitOne();
                Console.CancelKeyPress -= onInterrupt;
            }
            return 0;
        }
    }

    private static void Answer(ServiceLoad load)
    {
        Console.WriteLine("ok {0}", load.CurrentRequests);
        Console.Out.Flush();
    }
}
