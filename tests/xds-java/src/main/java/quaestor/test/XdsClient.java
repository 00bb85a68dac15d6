// A stock grpc-java client that balances with xDS over a quaestor balancer, with no quaestor
// code and no generated code: the same interface as tests/go-client.
//
// It calls quaestor.example.Work/DoWork on `-target xds:///NAME` (the bootstrap file comes
// from the GRPC_XDS_BOOTSTRAP environment variable, as grpc reads it) in a loop and prints,
// for each call, the worker that answered ("worker HOST:PORT") or the error ("error CODE",
// the canonical status name, with the details on stderr), until it is killed.
//
// With -schedule FILE it instead warms up until -warmup distinct workers answered, prints
// "ready", replays the open-loop arrival schedule of FILE (one arrival a line, microseconds
// from the start) with one call per arrival, and writes one line per call to -out:
// "LATENCY_US CODE WORKER" (latency from the scheduled arrival, CODE the numeric status,
// WORKER "-" when the call failed).
package quaestor.test;

import io.grpc.CallOptions;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayInputStream;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;

public final class XdsClient {
  /** The two messages travel as bytes, encoded and decoded by hand below. */
  private static final MethodDescriptor.Marshaller<byte[]> BYTES =
      new MethodDescriptor.Marshaller<>() {
        @Override
        public InputStream stream(byte[] value) {
          return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
          try {
            return stream.readAllBytes();
          } catch (IOException e) {
            throw Status.INTERNAL.withDescription("cannot read the response").withCause(e)
                .asRuntimeException();
          }
        }
      };

  private static final MethodDescriptor<byte[], byte[]> DO_WORK =
      MethodDescriptor.<byte[], byte[]>newBuilder()
          .setType(MethodDescriptor.MethodType.UNARY)
          .setFullMethodName("quaestor.example.Work/DoWork")
          .setRequestMarshaller(BYTES)
          .setResponseMarshaller(BYTES)
          .build();

  /** The request of every call, set from -target in main. */
  private static byte[] request = {};

  /**
   * WorkRequest { milliseconds = 1, service_name = the target's service }, so that the call
   * counts in the load of the service it was balanced for.
   */
  private static byte[] workRequest(String target) {
    byte[] name = target.substring(target.lastIndexOf('/') + 1).getBytes(StandardCharsets.UTF_8);
    if (name.length > 127) {
      usage("service name too long: " + target);
    }
    byte[] message = new byte[4 + name.length];
    message[0] = 0x08;
    message[1] = 0x01;
    message[2] = 0x12;
    message[3] = (byte) name.length;
    System.arraycopy(name, 0, message, 4, name.length);
    return message;
  }

  private static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);

  private XdsClient() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> flags = parseFlags(args);
    String target = flags.getOrDefault("target", "");
    if (target.isEmpty()) {
      usage("-target xds:///NAME is required");
    }
    request = workRequest(target);
    long intervalNanos = parseDuration(flags.getOrDefault("interval", "20ms"));
    long deadlineNanos = parseDuration(flags.getOrDefault("deadline", "5s"));
    String schedule = flags.get("schedule");
    String out = flags.get("out");
    int warmup = Integer.parseInt(flags.getOrDefault("warmup", "1"));

    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
    try {
      if (schedule != null) {
        if (out == null) {
          usage("-schedule needs -out FILE");
        }
        replay(channel, deadlineNanos, Path.of(schedule), Path.of(out), warmup);
        return;
      }
      while (true) {
        try {
          OUT.println("worker " + workerOf(call(channel, deadlineNanos)));
        } catch (RuntimeException e) {
          Status status = Status.fromThrowable(e);
          OUT.println("error " + status.getCode().name());
          System.err.println("call failed: " + status);
        }
        if (OUT.checkError()) {
          // Nobody reads the lines any more (a closed pipe): stop, as a Go client would.
          System.exit(1);
        }
        LockSupport.parkNanos(intervalNanos);
      }
    } finally {
      channel.shutdownNow();
    }
  }

  private static byte[] call(ManagedChannel channel, long deadlineNanos) {
    return ClientCalls.blockingUnaryCall(
        channel, DO_WORK, CallOptions.DEFAULT.withDeadlineAfter(deadlineNanos, TimeUnit.NANOSECONDS),
        request);
  }

  /** Warms up, then one call per arrival of `schedule`, every outcome written to `out`. */
  private static void replay(
      ManagedChannel channel, long deadlineNanos, Path schedule, Path out, int warmup)
      throws IOException, InterruptedException {
    List<Long> arrivals = new ArrayList<>();
    int lineNumber = 0;
    for (String line : Files.readAllLines(schedule)) {
      lineNumber++;
      String text = line.trim();
      if (text.isEmpty()) {
        continue;
      }
      try {
        arrivals.add(Long.parseLong(text) * 1000);
      } catch (NumberFormatException e) {
        fail(schedule + ":" + lineNumber + ": not a number of microseconds: \"" + text + "\"");
      }
    }

    Set<String> seen = new HashSet<>();
    long giveUp = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
    while (seen.size() < warmup) {
      if (System.nanoTime() > giveUp) {
        fail("warm-up: only " + seen.size() + " of " + warmup + " workers answered within 60 s");
      }
      try {
        seen.add(workerOf(call(channel, deadlineNanos)));
      } catch (RuntimeException e) {
        Thread.sleep(10);
      }
    }
    OUT.println("ready");

    int count = arrivals.size();
    long[] latencies = new long[count];
    int[] codes = new int[count];
    String[] workers = new String[count];
    CountDownLatch done = new CountDownLatch(count);
    long start = System.nanoTime();
    for (int i = 0; i < count; i++) {
      final int index = i;
      final long at = start + arrivals.get(i);
      long wait = at - System.nanoTime();
      if (wait > 0) {
        LockSupport.parkNanos(wait);
      }
      ClientCalls.asyncUnaryCall(
          channel.newCall(
              DO_WORK,
              CallOptions.DEFAULT.withDeadlineAfter(deadlineNanos, TimeUnit.NANOSECONDS)),
          request,
          new StreamObserver<byte[]>() {
            private String worker = "-";

            @Override
            public void onNext(byte[] response) {
              worker = workerOf(response);
            }

            @Override
            public void onError(Throwable t) {
              finish(Status.fromThrowable(t).getCode().value(), "-");
            }

            @Override
            public void onCompleted() {
              finish(0, worker);
            }

            private void finish(int code, String by) {
              latencies[index] = (System.nanoTime() - at) / 1000;
              codes[index] = code;
              workers[index] = by;
              done.countDown();
            }
          });
    }
    done.await();

    try (BufferedWriter writer = Files.newBufferedWriter(out, StandardCharsets.UTF_8)) {
      for (int i = 0; i < count; i++) {
        writer.write(latencies[i] + " " + codes[i] + " " + workers[i] + "\n");
      }
    }
  }

  /** WorkResponse.worker (field 1, a string), "?" if the message does not parse. */
  static String workerOf(byte[] message) {
    int at = 0;
    while (at < message.length) {
      long[] tag = varint(message, at);
      if (tag == null) {
        return "?";
      }
      at = (int) tag[1];
      int number = (int) (tag[0] >>> 3);
      int kind = (int) (tag[0] & 7);
      switch (kind) {
        case 0 -> {
          long[] value = varint(message, at);
          if (value == null) {
            return "?";
          }
          at = (int) value[1];
        }
        case 1 -> at += 8;
        case 5 -> at += 4;
        case 2 -> {
          long[] length = varint(message, at);
          if (length == null || length[1] + length[0] > message.length) {
            return "?";
          }
          int from = (int) length[1];
          at = from + (int) length[0];
          if (number == 1) {
            return new String(message, from, (int) length[0], StandardCharsets.UTF_8);
          }
        }
        default -> {
          return "?";
        }
      }
    }
    return "?";
  }

  /** The varint at `at`: {value, index after it}, or null if it runs past the end. */
  private static long[] varint(byte[] message, int at) {
    long value = 0;
    for (int shift = 0; shift < 64 && at < message.length; shift += 7) {
      byte b = message[at++];
      value |= (long) (b & 0x7f) << shift;
      if ((b & 0x80) == 0) {
        return new long[] {value, at};
      }
    }
    return null;
  }

  /** Go-style flags: -name value or -name=value (one or two dashes). */
  private static Map<String, String> parseFlags(String[] args) {
    Map<String, String> flags = new HashMap<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      if (!arg.startsWith("-")) {
        usage("unexpected argument " + arg);
      }
      String name = arg.replaceFirst("^--?", "");
      int equals = name.indexOf('=');
      if (equals >= 0) {
        flags.put(name.substring(0, equals), name.substring(equals + 1));
      } else if (i + 1 < args.length) {
        flags.put(name, args[++i]);
      } else {
        usage("flag -" + name + " needs a value");
      }
    }
    for (String name : flags.keySet()) {
      if (!List.of("target", "interval", "deadline", "schedule", "out", "warmup").contains(name)) {
        usage("unknown flag -" + name);
      }
    }
    return flags;
  }

  /** A Go duration such as 20ms, 5s, 1.5s, 250us or 2m, in nanoseconds. */
  static long parseDuration(String text) {
    String[][] units = {{"ns", "1"}, {"us", "1000"}, {"µs", "1000"}, {"ms", "1000000"},
        {"s", "1000000000"}, {"m", "60000000000"}, {"h", "3600000000000"}};
    // "ms" ends in "s" too: a suffix counts only if what is left ends in a digit.
    for (String[] unit : units) {
      if (text.endsWith(unit[0])) {
        String number = text.substring(0, text.length() - unit[0].length());
        if (!number.isEmpty() && Character.isDigit(number.charAt(number.length() - 1))) {
          try {
            return (long) (Double.parseDouble(number) * Long.parseLong(unit[1]));
          } catch (NumberFormatException e) {
            break;
          }
        }
      }
    }
    usage("not a duration: " + text + " (e.g. 20ms, 5s)");
    return 0;
  }

  private static void usage(String problem) {
    System.err.println(problem);
    System.err.println("usage: xds-client -target xds:///NAME [-interval 20ms] [-deadline 5s]"
        + " [-schedule FILE -out FILE [-warmup N]]");
    System.exit(64);
  }

  private static void fail(String problem) {
    System.err.println(problem);
    System.exit(1);
  }
}
