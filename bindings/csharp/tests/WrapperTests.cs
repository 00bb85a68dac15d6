// Checks of the C# binding against the real libquaestor: failures become QuaestorException with
// the right Code and message, text goes across as UTF-8, handles are freed once and refuse use
// after Dispose. Run by ffi/tests/csharp.rs:
//
//   mono WrapperTests.exe EXPECTED_VERSION
//
// Prints `ok - NAME` or `not ok - NAME: WHY` for each check; exits 0 only if all pass.

using System;
using System.Collections.Generic;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using Quaestor.Native;

public static class WrapperTests
{
    private static int failed;

    public static int Main(string[] args)
    {
        if (args.Length != 1)
        {
            Console.Error.WriteLine("usage: WrapperTests.exe EXPECTED_VERSION");
            return 2;
        }
        string expectedVersion = args[0];

        Check("the library's version", () =>
            Equal(expectedVersion, QuaestorLibrary.Version, "Version"));

        Check("result texts, known and unknown codes", () =>
        {
            Equal("not found", QuaestorLibrary.ResultMessage(QuaestorResult.NotFound), "NotFound text");
            Equal("ok", QuaestorLibrary.ResultMessage(QuaestorResult.Ok), "Ok text");
            Equal("unknown result code", QuaestorLibrary.ResultMessage((QuaestorResult)1234), "1234 text");
        });

        Check("the same service twice: ALREADY_EXISTS", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            using (reporter.AddService("Twice", 1))
            {
                var e = Fails(() => reporter.AddService("Twice", 1), QuaestorResult.AlreadyExists);
                Contains(e.Message, "\"Twice\"");
            }
        });

        Check("an unknown service: NOT_FOUND", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                var e = Fails(() => reporter.GetServiceLoad("Missing"), QuaestorResult.NotFound);
                Contains(e.Message, "\"Missing\"");
                Fails(() => reporter.SetServing("Missing", false), QuaestorResult.NotFound);
            }
        });

        Check("an empty service name: INVALID_ARGUMENT", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                Fails(() => reporter.AddService("", 1), QuaestorResult.InvalidArgument);
                // "" would mean every service to libquaestor: the wrapper says SetAllServing.
                Throws<ArgumentException>(() => reporter.SetServing("", false));
            }
        });

        Check("a second reporter on the first one's port: IO", () =>
        {
            using (var first = new LoadReporter("127.0.0.1", 0))
            {
                Fails(() => new LoadReporter("127.0.0.1", first.Port).Dispose(), QuaestorResult.Io);
            }
        });

        Check("a freed reporter's port is free again", () =>
        {
            int port;
            using (var first = new LoadReporter("127.0.0.1", 0))
            {
                port = first.Port;
            }
            using (var second = new LoadReporter("127.0.0.1", port))
            {
                Equal(port, second.Port, "Port");
            }
        });

        Check("TLS files missing: TLS; only one given: INVALID_ARGUMENT", () =>
        {
            Fails(() => new LoadReporter("127.0.0.1", 0, "/nonexistent/cert.pem", "/nonexistent/key.pem").Dispose(),
                QuaestorResult.Tls);
            Fails(() => new LoadReporter("127.0.0.1", 0, "/nonexistent/cert.pem", null).Dispose(),
                QuaestorResult.InvalidArgument);
        });

        Check("discover from a port nobody listens on: UNAVAILABLE or TIMEOUT", () =>
        {
            string address = "127.0.0.1:" + UnusedPort();
            Fails(() => ServiceDiscovery.Discover(address, "Worker", 0, 2000),
                QuaestorResult.Unavailable, QuaestorResult.Timeout);
            Fails(() => ServiceDiscovery.DiscoverTop(address, "Worker", 1, 2000),
                QuaestorResult.Unavailable, QuaestorResult.Timeout);
            // A client is made without connecting; every call fails until its balancer answers.
            var client = new DiscoveryClient(address, 2000);
            for (int i = 0; i < 2; i++)
            {
                Fails(() => client.Discover("Worker"), QuaestorResult.Unavailable, QuaestorResult.Timeout);
                Fails(() => client.DiscoverTop("Worker", 1), QuaestorResult.Unavailable, QuaestorResult.Timeout);
            }
            client.Dispose();
            Throws<ObjectDisposedException>(() => client.Discover("Worker"));
            Fails(() => new DiscoveryClient("not an address").Dispose(), QuaestorResult.InvalidArgument);
        });

        Check("register: no services is INVALID_STATE, a scope with '/' INVALID_ARGUMENT", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                string etcd = "http://127.0.0.1:" + UnusedPort();
                Fails(() => reporter.Register(etcd, "127.0.0.1"), QuaestorResult.InvalidState);
                using (reporter.AddService("Worker", 1))
                {
                    Fails(() => reporter.Register(etcd, "127.0.0.1", 0, "a/b"), QuaestorResult.InvalidArgument);
                }
                reporter.Deregister(); // not registered: nothing to do
            }
        });

        Check("arguments the wrapper rejects itself", () =>
        {
            Throws<ArgumentOutOfRangeException>(() => new LoadReporter("127.0.0.1", 65536).Dispose());
            Throws<ArgumentOutOfRangeException>(() => new LoadReporter("127.0.0.1", -1).Dispose());
            Throws<ArgumentNullException>(() => new LoadReporter(null, 0).Dispose());
            Throws<ArgumentOutOfRangeException>(() => ServiceDiscovery.Discover("127.0.0.1:1", "Worker", 0, -1));
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                Throws<ArgumentNullException>(() => reporter.AddService(null, 1));
                Throws<ArgumentOutOfRangeException>(() => reporter.Register("http://127.0.0.1:1", "h", 70000));
            }
        });

        Check("text that C or UTF-8 cannot carry is refused, not mangled", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                // A lone surrogate has no UTF-8 form: sending U+FFFD instead would name
                // another service.
                Throws<ArgumentException>(() => reporter.AddService("Bad\uD800", 1));
                // C would stop at the NUL and add "Cut".
                Throws<ArgumentException>(() => reporter.AddService("Cut\0Off", 1));
                Fails(() => reporter.GetServiceLoad("Cut"), QuaestorResult.NotFound);
                Fails(() => reporter.GetServiceLoad("Bad\uFFFD"), QuaestorResult.NotFound);
            }
        });

        Check("non-ASCII names go across as UTF-8, and come back in messages", () =>
        {
            const string name = "Wörker-服务-\U0001F600";
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            using (var added = reporter.AddService(name, 2))
            using (var found = reporter.GetServiceLoad(name))
            {
                Equal(name, found.ServiceName, "ServiceName");
                added.StartRequest();
                Equal(1, found.CurrentRequests, "requests seen through the second handle");
                var e = Fails(() => reporter.AddService(name, 2), QuaestorResult.AlreadyExists);
                Contains(e.Message, name);
                // Another normalisation of "ö" is another name.
                Fails(() => reporter.GetServiceLoad("Wo\u0308rker-服务-\U0001F600"), QuaestorResult.NotFound);
            }
        });

        Check("a message longer than the first buffer arrives whole", () =>
        {
            string name = new string('x', 3000) + "-end";
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            using (reporter.AddService(name, 1))
            {
                var e = Fails(() => reporter.AddService(name, 1), QuaestorResult.AlreadyExists);
                Contains(e.Message, name);
            }
        });

        Check("each thread reads its own last error", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            {
                var errors = new List<string>();
                var threads = new List<Thread>();
                for (int t = 0; t < 4; t++)
                {
                    string missing = "Missing" + t;
                    var thread = new Thread(() =>
                    {
                        for (int i = 0; i < 200; i++)
                        {
                            try
                            {
                                reporter.GetServiceLoad(missing).Dispose();
                                lock (errors) errors.Add("no exception");
                            }
                            catch (QuaestorException e)
                            {
                                if (!e.Message.Contains("\"" + missing + "\""))
                                {
                                    lock (errors) errors.Add(missing + ": " + e.Message);
                                }
                            }
                        }
                    });
                    threads.Add(thread);
                    thread.Start();
                }
                foreach (var thread in threads)
                {
                    if (!thread.Join(TimeSpan.FromSeconds(60)))
                    {
                        throw new Exception("a thread did not finish within 60 s");
                    }
                }
                if (errors.Count > 0)
                {
                    throw new Exception(errors.Count + " wrong messages, first: " + errors[0]);
                }
            }
        });

        Check("counting requests and setting load figures", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            using (var load = reporter.AddService("Worker", 4))
            {
                Equal(0, load.CurrentRequests, "at start");
                load.StartRequest();
                load.StartRequest();
                Equal(2, load.CurrentRequests, "after two starts");
                load.EndRequest();
                Equal(1, load.CurrentRequests, "after one end");
                load.ProcessCapacity = 8;
                load.KnownLoadRate = 0.5;
                load.KnownLoadRate = double.NaN;
                load.ServerUtilization = 0.25;
                load.ServerUtilization = -1;
                load.ServerMemoryUsagePercent = 42.5;
                load.ServerMemoryUsagePercent = -1;
                Fails(() => load.ServerMemoryUsagePercent = 100.5, QuaestorResult.InvalidArgument);
                Fails(() => load.StartRequest(double.PositiveInfinity), QuaestorResult.InvalidArgument);
                Equal(1, load.CurrentRequests, "a bad memory figure starts no request");
                load.StartRequest(12.5);
                Equal(2, load.CurrentRequests, "StartRequest(percent) starts one");
                load.EndRequest();
                load.SetServing(false);
                load.SetServing(true);
                reporter.SetServing("Worker", false);
                reporter.SetAllServing(true);
            }
        });

        Check("Dispose twice is harmless; use after Dispose is ObjectDisposedException", () =>
        {
            var reporter = new LoadReporter("127.0.0.1", 0);
            var load = reporter.AddService("Worker", 4);
            reporter.Dispose();
            reporter.Dispose();
            Throws<ObjectDisposedException>(() => reporter.AddService("Other", 1));
            Throws<ObjectDisposedException>(() => reporter.SetAllServing(true));
            // The load handle outlives its reporter.
            load.StartRequest();
            Equal(1, load.CurrentRequests, "after the reporter was freed");
            load.Dispose();
            load.Dispose();
            Throws<ObjectDisposedException>(() => load.StartRequest());
            Throws<ObjectDisposedException>(() => { var unused = load.CurrentRequests; });
            Throws<ObjectDisposedException>(() => load.SetServing(true));
        });

        Check("undisposed objects are freed by their finalizers", () =>
        {
            // Made on a thread that then ends, so no stale stack slot keeps them alive.
            int port = 0;
            var thread = new Thread(() => port = Abandon());
            thread.Start();
            thread.Join();
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (true)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                try
                {
                    using (var again = new LoadReporter("127.0.0.1", port))
                    {
                        Equal(port, again.Port, "Port");
                    }
                    return;
                }
                catch (QuaestorException e)
                {
                    if (e.Code != QuaestorResult.Io || DateTime.UtcNow > deadline)
                    {
                        throw new Exception("the abandoned reporter's port was not freed within 30 s", e);
                    }
                }
                Thread.Sleep(50);
            }
        });

        Check("a CancelableRequest counts, ends on Dispose and refuses use after it", () =>
        {
            using (var reporter = new LoadReporter("127.0.0.1", 0))
            using (var load = reporter.AddService("Worker", 4))
            {
                var request = load.StartCancelableRequest("alice", "prod");
                Equal(1, load.CurrentRequests, "CurrentRequests while it runs");
                Equal(false, request.IsCancelled, "IsCancelled at start");
                Equal("alice", request.RequestUserName, "RequestUserName");
                Equal("prod", request.Environment, "Environment");
                using (load.StartCancelableRequest("", ""))
                {
                    Equal(2, load.CurrentRequests, "\"\" is a user name and an environment too");
                }
                request.Dispose();
                request.Dispose(); // once is enough
                Equal(0, load.CurrentRequests, "CurrentRequests after Dispose");
                Throws<ObjectDisposedException>(() => { bool _ = request.IsCancelled; });
                Throws<ArgumentNullException>(() => load.StartCancelableRequest(null, "prod"));
                Throws<ArgumentException>(() => load.StartCancelableRequest("a\0b", "prod"));
                Equal(0, load.CurrentRequests, "refused requests start nothing");
            }
        });

        Console.WriteLine(failed == 0 ? "all passed" : failed + " failed");
        return failed == 0 ? 0 : 1;
    }

    // A reporter and a load handle left to the garbage collector; the reporter's port.
    private static int Abandon()
    {
        var reporter = new LoadReporter("127.0.0.1", 0);
        reporter.AddService("Worker", 1);
        return reporter.Port;
    }

    private static int UnusedPort()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    private static void Check(string name, Action test)
    {
        try
        {
            test();
            Console.WriteLine("ok - " + name);
        }
        catch (Exception e)
        {
            failed++;
            Console.WriteLine("not ok - " + name + ": " + e);
        }
        Console.Out.Flush();
    }

    private static QuaestorException Fails(Action action, params QuaestorResult[] codes)
    {
        string expected = string.Join(" or ", Array.ConvertAll(codes, c => c.ToString()));
        try
        {
            action();
        }
        catch (QuaestorException e)
        {
            if (Array.IndexOf(codes, e.Code) < 0)
            {
                throw new Exception("expected " + expected + ", got " + e.Code + ": " + e.Message, e);
            }
            if (string.IsNullOrEmpty(e.Message))
            {
                throw new Exception(e.Code + " without a message");
            }
            return e;
        }
        throw new Exception("expected a QuaestorException (" + expected + "), none was thrown");
    }

    private static T Throws<T>(Action action) where T : Exception
    {
        try
        {
            action();
        }
        catch (T e)
        {
            return e;
        }
        catch (Exception e)
        {
            throw new Exception("expected " + typeof(T).Name + ", got " + e.GetType().Name, e);
        }
        throw new Exception("expected " + typeof(T).Name + ", none was thrown");
    }

    private static void Equal<T>(T expected, T actual, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(expected, actual))
        {
            throw new Exception(what + ": expected " + expected + ", got " + actual);
        }
    }

    private static void Contains(string text, string part)
    {
        if (text == null || !text.Contains(part))
        {
            throw new Exception("\"" + text + "\" does not contain \"" + Shorten(part) + "\"");
        }
    }

    private static string Shorten(string text)
    {
        return text.Length <= 80 ? text : text.Substring(0, 40) + "..." + text.Substring(text.Length - 40);
    }
}
