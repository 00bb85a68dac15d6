// Quaestor.Native: libquaestor for C#. A worker reports its health and load (and registers in
// etcd) through LoadReporter and ServiceLoad, whose names mirror the C# Quaestor's, and asks a
// balancer for workers through ServiceDiscovery.
//
// Build: mcs -target:library -out:Quaestor.Native.dll bindings/csharp/*.cs (or any .NET SDK
// project including these files). At run time libquaestor.so must be found by the loader:
// next to the program, or on LD_LIBRARY_PATH.
//
// Errors: a failure libquaestor reports is a QuaestorException carrying its QuaestorResult code
// and message. Arguments the wrapper can judge itself throw the usual ArgumentException family
// (null text, a port out of range, text with a NUL or a lone surrogate); using an object after
// Dispose throws ObjectDisposedException. Every class is safe to use from several threads.

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Runtime.InteropServices;

namespace Quaestor.Native
{
    /// <summary>What a libquaestor call did: <c>quaestor_result</c> of quaestor.h.</summary>
    public enum QuaestorResult : uint
    {
        Ok = 0,
        /// <summary>A pointer that must not be NULL was NULL.</summary>
        NullParameter = 7401,
        /// <summary>A text argument was not UTF-8.</summary>
        InvalidUtf8 = 7402,
        /// <summary>An argument out of range or malformed (an empty service name, a bad address).</summary>
        InvalidArgument = 7403,
        /// <summary>No such service (not added to the reporter).</summary>
        NotFound = 7404,
        /// <summary>The service was added before.</summary>
        AlreadyExists = 7405,
        /// <summary>The port is in use, or another operating-system failure.</summary>
        Io = 7406,
        /// <summary>TLS files missing or unusable.</summary>
        Tls = 7407,
        /// <summary>The server (balancer, etcd) could not be reached.</summary>
        Unavailable = 7408,
        /// <summary>The server did not answer in time.</summary>
        Timeout = 7409,
        /// <summary>The server answered with an error.</summary>
        RemoteError = 7410,
        /// <summary>The buffer given is too small for the text.</summary>
        InsufficientSize = 7411,
        /// <summary>The object is in the wrong state (e.g. registered twice).</summary>
        InvalidState = 7412,
        /// <summary>The server refused the caller (etcd: authentication failed, permission denied).</summary>
        Refused = 7413,
        /// <summary>A bug in libquaestor (a panic, caught at the boundary).</summary>
        Panic = 7499,
    }

    /// <summary>A libquaestor call failed: <see cref="Code"/> says how, the message what happened.</summary>
    public class QuaestorException : Exception
    {
        public QuaestorException(QuaestorResult code, string message)
            : base(message)
        {
            Code = code;
        }

        public QuaestorException(QuaestorResult code, string message, Exception innerException)
            : base(message, innerException)
        {
            Code = code;
        }

        /// <summary>The result code libquaestor returned.</summary>
        public QuaestorResult Code { get; private set; }
    }

    /// <summary>libquaestor itself: its version and the texts of its result codes.</summary>
    public static class QuaestorLibrary
    {
        /// <summary>The library's version, <c>MAJOR.MINOR.PATCH</c>.</summary>
        public static string Version
        {
            get { return Utf8.FromNative(NativeMethods.quaestor_version()); }
        }

        /// <summary>The text of a result code (unknown codes have one too).</summary>
        public static string ResultMessage(QuaestorResult code)
        {
            return Errors.ReadText(
                (byte[] buffer, UIntPtr length, out UIntPtr written) =>
                    NativeMethods.quaestor_result_message((uint)code, buffer, length, out written))
                ?? code.ToString();
        }
    }

    /// <summary>Turning a result code into a QuaestorException.</summary>
    internal static class Errors
    {
        internal delegate QuaestorResult TextSource(byte[] buffer, UIntPtr length, out UIntPtr written);

        /// <summary>
        /// Text written by <paramref name="source"/> (quaestor_result_message or
        /// quaestor_last_error_message), in a buffer grown until it fits; null if it fails.
        /// </summary>
        internal static string ReadText(TextSource source)
        {
            // On INSUFFICIENT_SIZE the size needed is not written anywhere: try a larger buffer.
            for (int size = 256; size <= 1 << 22; size *= 4)
            {
                var buffer = new byte[size];
                UIntPtr written;
                var result = source(buffer, new UIntPtr((uint)size), out written);
                if (result == QuaestorResult.Ok)
                {
                    return Utf8.FromBuffer(buffer, (int)Math.Min(written.ToUInt64(), (ulong)size));
                }
                if (result != QuaestorResult.InsufficientSize)
                {
                    return null;
                }
            }
            return null;
        }

        /// <summary>
        /// The exception for a failed call. Call it right after the failing call, on the same
        /// thread, before any other libquaestor call: the message is the thread's last error.
        /// </summary>
        internal static QuaestorException Failure(QuaestorResult result)
        {
            string message = ReadText(NativeMethods.quaestor_last_error_message);
            if (string.IsNullOrEmpty(message))
            {
                message = QuaestorLibrary.ResultMessage(result);
            }
            return new QuaestorException(result, message);
        }

        internal static void Check(QuaestorResult result)
        {
            if (result != QuaestorResult.Ok)
            {
                throw Failure(result);
            }
        }

        /// <summary>As <see cref="Check(QuaestorResult)"/>, for a call with a handle out-parameter
        /// (NULL, as libquaestor writes it only on success, and released on failure anyway).</summary>
        internal static void Check(QuaestorResult result, SafeHandle handle)
        {
            if (result != QuaestorResult.Ok)
            {
                var failure = Failure(result);
                if (handle != null)
                {
                    handle.Dispose();
                }
                throw failure;
            }
        }

        internal static ushort Port(int port, string parameter)
        {
            if (port < 0 || port > ushort.MaxValue)
            {
                throw new ArgumentOutOfRangeException(parameter, port, "a port is 0-65535");
            }
            return (ushort)port;
        }

        internal static uint NotNegative(int value, string parameter)
        {
            if (value < 0)
            {
                throw new ArgumentOutOfRangeException(parameter, value, "must not be negative");
            }
            return (uint)value;
        }
    }

    /// <summary>
    /// Serves gRPC health (<c>grpc.health.v1.Health</c>) and load reporting for the services
    /// added to it, on a port of its own, and registers the worker in etcd. Dispose it when the
    /// worker stops: it deregisters, tells health watchers NOT_SERVING and closes its port.
    /// </summary>
    public sealed class LoadReporter : IDisposable
    {
        private readonly ReporterHandle handle;
        private readonly int port;

        /// <summary>Serves in plain text on <paramref name="host"/>:<paramref name="port"/>
        /// (port 0: a free one, see <see cref="Port"/>).</summary>
        public LoadReporter(string host, int port)
            : this(host, port, null, null)
        {
        }

        /// <summary>Serves with TLS when both PEM files are given (both null: plain text).</summary>
        /// <exception cref="QuaestorException">IO (port in use), TLS (unusable certificate or
        /// key), INVALID_ARGUMENT (the host does not resolve, only one file given).</exception>
        public LoadReporter(string host, int port, string certPemPath, string keyPemPath)
        {
            var hostText = Utf8.Required(host, "host");
            var portNumber = Errors.Port(port, "port");
            var cert = Utf8.Optional(certPemPath, "certPemPath");
            var key = Utf8.Optional(keyPemPath, "keyPemPath");
            ReporterHandle created;
            var result = NativeMethods.quaestor_reporter_new(hostText, portNumber, cert, key, out created);
            Errors.Check(result, created);
            handle = created;
            this.port = NativeMethods.quaestor_reporter_port(handle);
        }

        /// <summary>The port the reporter serves on.</summary>
        public int Port
        {
            get { return port; }
        }

        /// <summary>Reports a new service taking <paramref name="processCapacity"/> requests at
        /// once (-1: unknown), SERVING; its load handle counts its requests.</summary>
        /// <exception cref="QuaestorException">ALREADY_EXISTS, INVALID_ARGUMENT (empty name).</exception>
        public ServiceLoad AddService(string serviceName, int processCapacity)
        {
            var name = Utf8.Required(serviceName, "serviceName");
            ServiceLoadHandle load;
            var result = NativeMethods.quaestor_reporter_add_service(handle, name, processCapacity, out load);
            Errors.Check(result, load);
            return new ServiceLoad(load, serviceName);
        }

        /// <summary>Another load handle of a service added before.</summary>
        /// <exception cref="QuaestorException">NOT_FOUND.</exception>
        public ServiceLoad GetServiceLoad(string serviceName)
        {
            var name = Utf8.Required(serviceName, "serviceName");
            ServiceLoadHandle load;
            var result = NativeMethods.quaestor_reporter_service_load(handle, name, out load);
            Errors.Check(result, load);
            return new ServiceLoad(load, serviceName);
        }

        /// <summary>Turns one service SERVING or NOT_SERVING.</summary>
        /// <exception cref="QuaestorException">NOT_FOUND.</exception>
        public void SetServing(string serviceName, bool serving)
        {
            if (serviceName != null && serviceName.Length == 0)
            {
                // libquaestor reads "" as "every service": that is SetAllServing.
                throw new ArgumentException("empty service name (use SetAllServing)", "serviceName");
            }
            var name = Utf8.Required(serviceName, "serviceName");
            Errors.Check(NativeMethods.quaestor_reporter_set_serving(handle, name, serving));
        }

        /// <summary>Turns every service, and the worker as a whole, SERVING or NOT_SERVING.</summary>
        public void SetAllServing(bool serving)
        {
            Errors.Check(NativeMethods.quaestor_reporter_set_serving(handle, null, serving));
        }

        /// <summary>
        /// Registers every service added so far in etcd (<paramref name="etcdEndpoints"/>: client
        /// URLs, comma-separated) as served at <paramref name="advertisedHost"/>:<paramref
        /// name="servicePort"/> (0: the reporter's port), with the reporter as control endpoint,
        /// in <paramref name="scope"/> ("": the default), on a lease of <paramref
        /// name="leaseTtlSeconds"/> (0: 10 s) kept alive in the background.
        /// </summary>
        /// <exception cref="QuaestorException">INVALID_STATE (no services, registered already),
        /// INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT, REMOTE_ERROR.</exception>
        public void Register(
            string etcdEndpoints,
            string advertisedHost,
            int servicePort = 0,
            string scope = "",
            int leaseTtlSeconds = 0)
        {
            var endpoints = Utf8.Required(etcdEndpoints, "etcdEndpoints");
            var host = Utf8.Required(advertisedHost, "advertisedHost");
            var portNumber = Errors.Port(servicePort, "servicePort");
            var scopeText = Utf8.Optional(scope, "scope");
            var ttl = Errors.NotNegative(leaseTtlSeconds, "leaseTtlSeconds");
            Errors.Check(NativeMethods.quaestor_reporter_register(
                handle, endpoints, scopeText, host, portNumber, ttl));
        }

        /// <summary>Removes the worker's registrations; not registered: nothing to do.</summary>
        /// <exception cref="QuaestorException">UNAVAILABLE, TIMEOUT (the lease then ends by itself).</exception>
        public void Deregister()
        {
            Errors.Check(NativeMethods.quaestor_reporter_deregister(handle));
        }

        /// <summary>Deregisters and stops serving (calls in flight get up to 5 s). The
        /// ServiceLoad objects stay usable; their reports then go nowhere.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }
    }

    /// <summary>
    /// One service of a <see cref="LoadReporter"/>: its load counters and its health. Count each
    /// request with <see cref="StartRequest"/> and <see cref="EndRequest"/> (in a finally).
    /// </summary>
    public sealed class ServiceLoad : IDisposable
    {
        private readonly ServiceLoadHandle handle;

        internal ServiceLoad(ServiceLoadHandle handle, string serviceName)
        {
            this.handle = handle;
            ServiceName = serviceName;
        }

        /// <summary>The service's name.</summary>
        public string ServiceName { get; private set; }

        /// <summary>One request has started (one atomic operation).</summary>
        public void StartRequest()
        {
            NativeMethods.quaestor_service_load_start_request(handle);
        }

        /// <summary>One request has started, and the machine's memory is
        /// <paramref name="machineMemoryUsagePercent"/> percent in use (as
        /// <see cref="ServerMemoryUsagePercent"/>; set before the request starts, so a bad value
        /// starts none).</summary>
        public void StartRequest(double machineMemoryUsagePercent)
        {
            ServerMemoryUsagePercent = machineMemoryUsagePercent;
            StartRequest();
        }

        /// <summary>One request has ended.</summary>
        public void EndRequest()
        {
            NativeMethods.quaestor_service_load_end_request(handle);
        }

        /// <summary>
        /// Starts a request on behalf of <paramref name="requestUserName"/> in
        /// <paramref name="environment"/> ("" is a valid value), as the C# Quaestor's
        /// <c>RequestAdmin.RegisterRequest</c>: it counts as in flight until it is disposed, and
        /// the reporter's <c>ProcessAdministrationGrpc/Cancel</c> for exactly that user name
        /// and environment sets its <see cref="CancelableRequest.IsCancelled"/>. Dispose it
        /// (<c>using</c>) when the request ends.
        /// </summary>
        public CancelableRequest StartCancelableRequest(string requestUserName, string environment)
        {
            byte[] user = Utf8.Required(requestUserName, "requestUserName");
            byte[] env = Utf8.Required(environment, "environment");
            RequestHandle request;
            var result = NativeMethods.quaestor_service_load_start_request_as(handle, user, env, out request);
            Errors.Check(result, request);
            return new CancelableRequest(request, requestUserName, environment);
        }

        /// <summary>Requests in flight now.</summary>
        public int CurrentRequests
        {
            get { return NativeMethods.quaestor_service_load_current_requests(handle); }
        }

        /// <summary>Requests the service takes at once (the reported request capacity).</summary>
        public int ProcessCapacity
        {
            set { Errors.Check(NativeMethods.quaestor_service_load_set_capacity(handle, value)); }
        }

        /// <summary>A load figure the worker computes itself (balancers rank by it when every
        /// candidate has one); negative or NaN: none (the default).</summary>
        public double KnownLoadRate
        {
            set { Errors.Check(NativeMethods.quaestor_service_load_set_known_load_rate(handle, value)); }
        }

        /// <summary>Fixes the reported server utilisation (1.0 = all cores busy); negative or
        /// NaN: measure this process's CPU use (the default).</summary>
        public double ServerUtilization
        {
            set { Errors.Check(NativeMethods.quaestor_service_load_set_server_utilization(handle, value)); }
        }

        /// <summary>Fixes the reported host memory usage in percent (0 to 100); negative or
        /// NaN: read the host's memory at each report (the default). Above 100 or infinite:
        /// a <see cref="QuaestorException"/> (InvalidArgument).</summary>
        public double ServerMemoryUsagePercent
        {
            set { Errors.Check(NativeMethods.quaestor_service_load_set_memory_usage_percent(handle, value)); }
        }

        /// <summary>Turns this service SERVING or NOT_SERVING.</summary>
        public void SetServing(bool serving)
        {
            Errors.Check(NativeMethods.quaestor_service_load_set_serving(handle, serving));
        }

        /// <summary>Frees the handle; the service stays reported.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }
    }

    /// <summary>
    /// One request started on behalf of a user in an environment
    /// (<see cref="ServiceLoad.StartCancelableRequest"/>). Poll <see cref="IsCancelled"/> between
    /// steps of the work; <see cref="Dispose"/> ends the request. It stays usable after its
    /// ServiceLoad and LoadReporter are disposed.
    /// </summary>
    public sealed class CancelableRequest : IDisposable
    {
        private readonly RequestHandle handle;

        internal CancelableRequest(RequestHandle handle, string requestUserName, string environment)
        {
            this.handle = handle;
            RequestUserName = requestUserName;
            Environment = environment;
        }

        /// <summary>The user name the request was started with.</summary>
        public string RequestUserName { get; private set; }

        /// <summary>The environment the request was started in.</summary>
        public string Environment { get; private set; }

        /// <summary>True once a Cancel of this user name and environment arrived (one atomic
        /// read). ObjectDisposedException after <see cref="Dispose"/>.</summary>
        public bool IsCancelled
        {
            get { return NativeMethods.quaestor_request_cancelled(handle); }
        }

        /// <summary>Ends the request: one request fewer in flight, no longer cancellable.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }
    }

    /// <summary>Where a service is served: a balancer's answer.</summary>
    public sealed class ServiceLocation : IEquatable<ServiceLocation>
    {
        public ServiceLocation(string host, int port)
        {
            if (host == null)
            {
                throw new ArgumentNullException("host");
            }
            Host = host;
            Port = port;
        }

        public string Host { get; private set; }

        public int Port { get; private set; }

        public bool Equals(ServiceLocation other)
        {
            return other != null && Host == other.Host && Port == other.Port;
        }

        public override bool Equals(object obj)
        {
            return Equals(obj as ServiceLocation);
        }

        public override int GetHashCode()
        {
            return Host.GetHashCode() * 31 + Port;
        }

        /// <summary><c>host:port</c> (<c>[host]:port</c> for an IPv6 address).</summary>
        public override string ToString()
        {
            var host = Host.IndexOf(':') >= 0 ? "[" + Host + "]" : Host;
            return host + ":" + Port.ToString(CultureInfo.InvariantCulture);
        }
    }

    /// <summary>Asking a quaestor balancer which workers serve a service.</summary>
    public static class ServiceDiscovery
    {
        private delegate QuaestorResult DiscoverFunction(
            byte[] balancerAddress, byte[] scope, byte[] service, int maxCount, uint timeoutMs,
            out LocationListHandle list);

        /// <summary>
        /// The healthy locations of <paramref name="serviceName"/> that the balancer at
        /// <paramref name="balancerAddress"/> (<c>host:port</c> or <c>http://host:port</c>)
        /// knows, at most <paramref name="maxCount"/> (0: all), in random order. An unknown
        /// service is an empty list.
        /// </summary>
        /// <exception cref="QuaestorException">INVALID_ARGUMENT, UNAVAILABLE, TIMEOUT, REMOTE_ERROR.</exception>
        public static IList<ServiceLocation> Discover(
            string balancerAddress,
            string serviceName,
            int maxCount = 0,
            int timeoutMs = 5000,
            string scope = "")
        {
            return Ask(NativeMethods.quaestor_discover, balancerAddress, serviceName, maxCount, timeoutMs, scope);
        }

        /// <summary>As <see cref="Discover"/>, but the locations that report load, least loaded
        /// first: <paramref name="maxCount"/> 1 is "which worker should I call now?".</summary>
        public static IList<ServiceLocation> DiscoverTop(
            string balancerAddress,
            string serviceName,
            int maxCount = 0,
            int timeoutMs = 5000,
            string scope = "")
        {
            return Ask(NativeMethods.quaestor_discover_top, balancerAddress, serviceName, maxCount, timeoutMs, scope);
        }

        private static IList<ServiceLocation> Ask(
            DiscoverFunction discover,
            string balancerAddress,
            string serviceName,
            int maxCount,
            int timeoutMs,
            string scope)
        {
            var balancer = Utf8.Required(balancerAddress, "balancerAddress");
            var service = Utf8.Required(serviceName, "serviceName");
            var scopeText = Utf8.Optional(scope, "scope");
            var timeout = Errors.NotNegative(timeoutMs, "timeoutMs");
            LocationListHandle list;
            var result = discover(balancer, scopeText, service, maxCount, timeout, out list);
            return Locations.Read(result, list);
        }
    }

    internal static class Locations
    {
        /// <summary>The locations of a list a discovery call answered with (checking its result
        /// first), freeing the list.</summary>
        internal static IList<ServiceLocation> Read(QuaestorResult result, LocationListHandle list)
        {
            Errors.Check(result, list);
            using (list)
            {
                ulong count = NativeMethods.quaestor_location_list_len(list).ToUInt64();
                var locations = new List<ServiceLocation>((int)count);
                for (ulong i = 0; i < count; i++)
                {
                    var index = new UIntPtr(i);
                    // The host text belongs to the list, alive until the end of this block.
                    var host = Utf8.FromNative(NativeMethods.quaestor_location_list_host(list, index));
                    var port = NativeMethods.quaestor_location_list_port(list, index);
                    locations.Add(new ServiceLocation(host ?? "", port));
                }
                return locations;
            }
        }
    }

    /// <summary>
    /// A client of one quaestor balancer that keeps its connection between calls (connecting
    /// on the first call, and again after a failure): for a worker or client that asks often.
    /// Safe to use from several threads at once; <see cref="Dispose"/> closes the connection.
    /// </summary>
    public sealed class DiscoveryClient : IDisposable
    {
        private readonly DiscoveryClientHandle handle;
        private readonly string address;

        /// <summary>A client of the balancer at <paramref name="balancerAddress"/>
        /// (<c>host:port</c>, <c>http://host:port</c> or <c>https://host:port</c>);
        /// <paramref name="timeoutMs"/> bounds connecting and each call;
        /// <paramref name="caPemPath"/>: the CA certificate (PEM) of a balancer serving TLS
        /// (null: plain text). Nothing is connected yet.</summary>
        /// <exception cref="QuaestorException">INVALID_ARGUMENT (bad address).</exception>
        public DiscoveryClient(string balancerAddress, int timeoutMs = 5000, string caPemPath = null)
        {
            var balancer = Utf8.Required(balancerAddress, "balancerAddress");
            var ca = Utf8.Optional(caPemPath, "caPemPath");
            var timeout = Errors.NotNegative(timeoutMs, "timeoutMs");
            DiscoveryClientHandle created;
            var result = NativeMethods.quaestor_discovery_client_new(balancer, ca, timeout, out created);
            Errors.Check(result, created);
            handle = created;
            address = balancerAddress;
        }

        /// <summary>The balancer's address, as given.</summary>
        public string Address
        {
            get { return address; }
        }

        /// <summary>The healthy locations of <paramref name="serviceName"/>, at most
        /// <paramref name="maxCount"/> (0: all), in random order.</summary>
        /// <exception cref="QuaestorException">INVALID_ARGUMENT, TLS, UNAVAILABLE, TIMEOUT, REMOTE_ERROR.</exception>
        public IList<ServiceLocation> Discover(string serviceName, int maxCount = 0, string scope = "")
        {
            var service = Utf8.Required(serviceName, "serviceName");
            var scopeText = Utf8.Optional(scope, "scope");
            LocationListHandle list;
            var result = NativeMethods.quaestor_discovery_client_discover(handle, scopeText, service, maxCount, out list);
            return Locations.Read(result, list);
        }

        /// <summary>As <see cref="Discover"/>, but the locations that report load, least loaded
        /// first: <paramref name="maxCount"/> 1 is "which worker should I call now?".</summary>
        public IList<ServiceLocation> DiscoverTop(string serviceName, int maxCount = 0, string scope = "")
        {
            var service = Utf8.Required(serviceName, "serviceName");
            var scopeText = Utf8.Optional(scope, "scope");
            LocationListHandle list;
            var result = NativeMethods.quaestor_discovery_client_discover_top(handle, scopeText, service, maxCount, out list);
            return Locations.Read(result, list);
        }

        /// <summary>Closes the connection; later calls throw ObjectDisposedException.</summary>
        public void Dispose()
        {
            handle.Dispose();
        }
    }
}
