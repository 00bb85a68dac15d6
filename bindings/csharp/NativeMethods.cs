// libquaestor's C ABI (ffi/include/quaestor.h) as P/Invoke declarations, one per function, and
// the SafeHandle types of its opaque objects. Internal: the public classes in
// Quaestor.cs are what callers use.
//
// Mapping rules (the same for Mono and .NET):
//   const char *   -> byte[] holding UTF-8 and a NUL (see Utf8.cs); never `string`, whose
//                     default marshalling is not UTF-8 on every runtime and platform
//   returned const char * -> IntPtr (static or owned by a list: never freed by the marshaller)
//   uint16_t -> ushort, int32_t -> int, uint32_t -> uint, size_t -> UIntPtr, double -> double
//   bool -> [MarshalAs(UnmanagedType.I1)] bool (C99 bool is one byte)
//   quaestor_result -> QuaestorResult (uint-backed enum)
//   quaestor_X * -> the matching SafeHandle (reference-counted across calls, freed once)

using System;
using System.Runtime.InteropServices;

namespace Quaestor.Native
{
    internal static class NativeMethods
    {
        // "quaestor": libquaestor.so on Linux, libquaestor.dylib on macOS, quaestor.dll on Windows.
        private const string Library = "quaestor";

        // --- version, result texts ---

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern IntPtr quaestor_version();

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_result_message(
            uint code, [Out] byte[] buf, UIntPtr len, out UIntPtr written);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_last_error_message(
            [Out] byte[] buf, UIntPtr len, out UIntPtr written);

        // --- discovery ---

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_discover(
            byte[] balancerAddress, byte[] scope, byte[] service, int maxCount, uint timeoutMs,
            out LocationListHandle list);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_discover_top(
            byte[] balancerAddress, byte[] scope, byte[] service, int maxCount, uint timeoutMs,
            out LocationListHandle list);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_discovery_client_new(
            byte[] balancerAddress, byte[] caPemPath, uint timeoutMs, out DiscoveryClientHandle client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_discovery_client_discover(
            DiscoveryClientHandle client, byte[] scope, byte[] service, int maxCount,
            out LocationListHandle list);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_discovery_client_discover_top(
            DiscoveryClientHandle client, byte[] scope, byte[] service, int maxCount,
            out LocationListHandle list);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_discovery_client_free(IntPtr client);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern UIntPtr quaestor_location_list_len(LocationListHandle list);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern IntPtr quaestor_location_list_host(LocationListHandle list, UIntPtr index);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern ushort quaestor_location_list_port(LocationListHandle list, UIntPtr index);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_location_list_free(IntPtr list);

        // --- service-load handles ---

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_service_load_start_request(ServiceLoadHandle load);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_service_load_end_request(ServiceLoadHandle load);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern int quaestor_service_load_current_requests(ServiceLoadHandle load);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_set_capacity(
            ServiceLoadHandle load, int capacity);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_set_known_load_rate(
            ServiceLoadHandle load, double rate);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_set_server_utilization(
            ServiceLoadHandle load, double utilization);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_set_memory_usage_percent(
            ServiceLoadHandle load, double percent);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_set_serving(
            ServiceLoadHandle load, [MarshalAs(UnmanagedType.I1)] bool serving);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_service_load_free(IntPtr load);

        // --- cancellable requests ---

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_service_load_start_request_as(
            ServiceLoadHandle load, byte[] userName, byte[] environment, out RequestHandle request);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        [return: MarshalAs(UnmanagedType.I1)]
        internal static extern bool quaestor_request_cancelled(RequestHandle request);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_request_end(IntPtr request);

        // --- the reporter ---

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_new(
            byte[] host, ushort port, byte[] certPemPath, byte[] keyPemPath,
            out ReporterHandle reporter);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern ushort quaestor_reporter_port(ReporterHandle reporter);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_add_service(
            ReporterHandle reporter, byte[] service, int capacity, out ServiceLoadHandle load);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_service_load(
            ReporterHandle reporter, byte[] service, out ServiceLoadHandle load);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_set_serving(
            ReporterHandle reporter, byte[] service, [MarshalAs(UnmanagedType.I1)] bool serving);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_register(
            ReporterHandle reporter, byte[] etcdEndpoints, byte[] scope, byte[] advertisedHost,
            ushort servicePort, uint leaseTtlSeconds);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern QuaestorResult quaestor_reporter_deregister(ReporterHandle reporter);

        [DllImport(Library, CallingConvention = CallingConvention.Cdecl, ExactSpelling = true)]
        internal static extern void quaestor_reporter_free(IntPtr reporter);
    }

    // NULL is the invalid value of every handle; each is freed exactly once, when its
    // last user (Dispose, or the finalizer, and any call still running) lets go of it.

    /// <summary>A <c>quaestor_reporter *</c>, freed with <c>quaestor_reporter_free</c>.</summary>
    internal sealed class ReporterHandle : SafeHandle
    {
        public ReporterHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            // Deregisters and stops serving: may wait for etcd and for calls in flight.
            NativeMethods.quaestor_reporter_free(handle);
            return true;
        }
    }

    /// <summary>A <c>quaestor_service_load *</c>, freed with <c>quaestor_service_load_free</c>.</summary>
    internal sealed class ServiceLoadHandle : SafeHandle
    {
        public ServiceLoadHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.quaestor_service_load_free(handle);
            return true;
        }
    }

    /// <summary>A <c>quaestor_request *</c>, ended and freed with <c>quaestor_request_end</c>.</summary>
    internal sealed class RequestHandle : SafeHandle
    {
        public RequestHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.quaestor_request_end(handle);
            return true;
        }
    }

    /// <summary>A <c>quaestor_location_list *</c>, freed with <c>quaestor_location_list_free</c>.</summary>
    internal sealed class LocationListHandle : SafeHandle
    {
        public LocationListHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.quaestor_location_list_free(handle);
            return true;
        }
    }

    /// <summary>A <c>quaestor_discovery_client*</c>; freeing it closes its connection.</summary>
    internal sealed class DiscoveryClientHandle : SafeHandle
    {
        public DiscoveryClientHandle() : base(IntPtr.Zero, true)
        {
        }

        public override bool IsInvalid
        {
            get { return handle == IntPtr.Zero; }
        }

        protected override bool ReleaseHandle()
        {
            NativeMethods.quaestor_discovery_client_free(handle);
            return true;
        }
    }
}
