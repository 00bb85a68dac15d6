// A reporter whose requests are started on behalf of users in environments
// (ServiceLoad.StartCancelableRequest), driven over stdin by ffi/tests/csharp.rs, which calls
// the reporter's ProcessAdministrationGrpc/Cancel over real gRPC in between (the protocol is in
// ffi/tests/common/cancel.rs).

using System;
using System.Collections.Generic;
using Quaestor.Native;

public static class CancelWorker
{
    public static int Main()
    {
        using (var reporter = new LoadReporter("127.0.0.1", 0))
        using (var load = reporter.AddService("Worker", 4))
        {
            Console.WriteLine("listening on 127.0.0.1:" + reporter.Port);
            Console.Out.Flush();
            var requests = new List<CancelableRequest>();
            string line;
            while ((line = Console.ReadLine()) != null)
            {
                string[] words = line.Split(new[] { ' ' }, StringSplitOptions.RemoveEmptyEntries);
                string command = words.Length > 0 ? words[0] : "";
                if (command == "start" && words.Length == 3)
                {
                    requests.Add(load.StartCancelableRequest(words[1], words[2]));
                    Console.WriteLine("ok " + load.CurrentRequests);
                }
                else if (command == "cancelled" && words.Length == 2)
                {
                    Console.WriteLine("ok " + (requests[int.Parse(words[1])].IsCancelled ? 1 : 0));
                }
                else if (command == "end" && words.Length == 2)
                {
                    requests[int.Parse(words[1])].Dispose();
                    Console.WriteLine("ok " + load.CurrentRequests);
                }
                else if (command == "quit")
                {
                    break;
                }
                else
                {
                    Console.Error.WriteLine("unknown command: " + line);
                    return 64;
                }
                Console.Out.Flush();
            }
            foreach (var request in requests)
            {
                request.Dispose();
            }
            return load.CurrentRequests == 0 ? 0 : 1;
        }
    }
}
