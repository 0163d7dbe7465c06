// One delivery replica under test, in its own process: configured from the environment exactly as
// services/delivery/src/main.ts is. Prints one JSON line with its URL once listening; on SIGUSR2 runs a
// full GC (when started with --expose-gc) and prints {"gc": true}, so that the orchestrator reads a
// settled RSS; closes on SIGTERM.
//
// Over the IPC channel run.ts opens, {"stats": "reset"} starts a measurement and {"stats": "read"}
// answers {"stats": {cpu_ms, user_ms, system_ms, eld_ms}}: the process's own CPU time (process.cpuUsage)
// and the event-loop delay (perf_hooks.monitorEventLoopDelay) since the reset. A blocked event loop
// delays every push behind it, so its p99 bounds how low the delivery latency's p99 can be.
// With BENCH_PROFILE_DIR set, a CPU profile of the same span (not of start-up and set-up, as
// --cpu-prof would) is written there as replica-<pid>-<n>.cpuprofile.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { PerformanceObserver, constants, monitorEventLoopDelay } from "node:perf_hooks";
import { createDelivery, loadDeliveryConfig } from "@mastodon-mls/delivery";

const delivery = await createDelivery(loadDeliveryConfig(process.env));
process.on("SIGUSR2", () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  console.log(
    JSON.stringify({ gc: gc !== undefined, heap: m.heapUsed, external: m.external + m.arrayBuffers }),
  );
});

// 2 ms: fine enough to see the few-millisecond stalls that matter against a 50 ms p99, cheap enough
// (a timer every 2 ms) not to show in the CPU figures.
const delay = monitorEventLoopDelay({ resolution: 2 });
delay.enable();
// GC pauses on the main thread: a long one stalls every stream of the replica at once.
const gcs = { count: 0, ms: 0, max: 0, major: 0, majorMax: 0 };
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    gcs.count++;
    gcs.ms += entry.duration;
    gcs.max = Math.max(gcs.max, entry.duration);
    const detail = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail;
    if (detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      gcs.major++;
      gcs.majorMax = Math.max(gcs.majorMax, entry.duration);
    }
  }
}).observe({ entryTypes: ["gc"] });
let cpu0 = process.cpuUsage();
const profileDir = process.env.BENCH_PROFILE_DIR;
const profiler = profileDir ? new Session() : undefined;
profiler?.connect();
let profiles = 0;
process.on("message", async (m: { stats?: string }) => {
  if (m.stats === "reset") {
    await profiler?.post("Profiler.enable");
    await profiler?.post("Profiler.setSamplingInterval", { interval: 200 });
    await profiler?.post("Profiler.start");
    // Where the garbage comes from (sampled allocations), next to where the time goes.
    await profiler?.post("HeapProfiler.startSampling", {
      samplingInterval: 16384,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
    delay.reset();
    Object.assign(gcs, { count: 0, ms: 0, max: 0, major: 0, majorMax: 0 });
    cpu0 = process.cpuUsage();
  } else if (m.stats === "read") {
    const cpu = process.cpuUsage(cpu0);
    if (profiler) {
      const { profile } = await profiler.post("Profiler.stop");
      const heap = await profiler.post("HeapProfiler.stopSampling");
      writeFileSync(`${profileDir}/replica-${process.pid}-${profiles}.cpuprofile`, JSON.stringify(profile));
      writeFileSync(
        `${profileDir}/replica-${process.pid}-${profiles++}.heapprofile`,
        JSON.stringify(heap.profile),
      );
    }
    const ms = (ns: number) => Math.round(ns / 1e4) / 100;
    process.send?.({
      stats: {
        cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
        user_ms: Math.round(cpu.user / 1000),
        system_ms: Math.round(cpu.system / 1000),
        eld_ms: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
        gc: {
          pauses: gcs.count,
          total_ms: Math.round(gcs.ms),
          max_ms: Math.round(gcs.max * 10) / 10,
          major: gcs.major,
          major_max_ms: Math.round(gcs.majorMax * 10) / 10,
        },
      },
    });
  }
});

// Handlers first: the orchestrator may signal as soon as it reads the line below.
process.once("SIGTERM", () => {
  delivery.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
});
const url = await delivery.listen();
console.log(JSON.stringify({ listening: url, pid: process.pid }));
