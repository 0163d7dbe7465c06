// BENCH_PROFILE: CPU profiles of the client's timed operations only (node:inspector in this process),
// summed per group size and operation, and summarised by where the time goes. The profiler slows
// everything down: a run with BENCH_PROFILE set is for finding causes, not for the figures.
//
// Three views of the same samples:
// - "self": the function on top of the stack (where the CPU actually was), file:line;
// - "ours": the innermost frame of our own packages (packages/client, bridge, protocol) on the stack,
//   i.e. which of our functions is responsible for that sample, libraries it called included;
// - "module": the library (or our package) the top frame belongs to, and (idle) = waiting on I/O.
import { writeFile } from "node:fs/promises";
import { Session } from "node:inspector/promises";
import { join } from "node:path";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

const OURS = /\/packages\/(client|bridge|protocol)\/src\//;

function shortUrl(url: string): string {
  const path = url.replace(/^file:\/\//, "");
  const nm = path.lastIndexOf("/node_modules/");
  if (nm >= 0) return path.slice(nm + "/node_modules/".length);
  const repo = path.indexOf("/packages/");
  if (repo >= 0) return path.slice(repo + 1);
  return path === "" ? "" : path;
}

function moduleOf(frame: CallFrame): string {
  const url = frame.url;
  if (url === "") return frame.functionName.startsWith("(") ? frame.functionName : "(native)";
  if (url.startsWith("node:")) return "node internals";
  const short = shortUrl(url);
  if (short.startsWith("packages/")) return short.split("/").slice(0, 2).join("/");
  const parts = short.split("/");
  return parts[0]!.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!;
}

function frameName(frame: CallFrame): string {
  // Positions in TypeScript sources are of tsx's output, not of the source: the file is enough there.
  const line = frame.url.endsWith(".ts") ? "" : `:${frame.lineNumber + 1}`;
  const where = frame.url === "" ? "" : ` ${shortUrl(frame.url)}${line}`;
  return `${frame.functionName || "(anonymous)"}${where}`;
}

export class OpProfiler {
  private readonly session = new Session();
  private readonly collected = new Map<string, CpuProfile[]>();

  constructor(private readonly saveDir: string | undefined) {}

  async init(): Promise<void> {
    this.session.connect();
    await this.session.post("Profiler.enable");
    await this.session.post("Profiler.setSamplingInterval", { interval: 250 });
  }

  async start(): Promise<void> {
    await this.session.post("Profiler.start");
  }

  async stop(key: string): Promise<void> {
    const { profile } = (await this.session.post("Profiler.stop")) as { profile: CpuProfile };
    const list = this.collected.get(key) ?? [];
    list.push(profile);
    this.collected.set(key, list);
    if (this.saveDir !== undefined) {
      const name = `${key.replace(/[^a-z0-9+-]+/gi, "_")}_${list.length}.cpuprofile`;
      await writeFile(join(this.saveDir, name), JSON.stringify(profile));
    }
  }

  /** Prints the top entries of each view per key. */
  report(top = 12): void {
    for (const [key, profiles] of this.collected) {
      const self = new Map<string, number>();
      const ours = new Map<string, number>();
      const modules = new Map<string, number>();
      let total = 0;
      for (const p of profiles) {
        const byId = new Map(p.nodes.map((n) => [n.id, n]));
        const parent = new Map<number, number>();
        for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
        const samples = p.samples ?? [];
        const deltas = p.timeDeltas ?? [];
        for (let i = 0; i < samples.length; i++) {
          const ms = (deltas[i + 1] ?? deltas[i] ?? 0) / 1000;
          const node = byId.get(samples[i]!);
          if (node === undefined) continue;
          total += ms;
          const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + ms);
          add(self, frameName(node.callFrame));
          add(modules, moduleOf(node.callFrame));
          let cur: ProfileNode | undefined = node;
          let owner = "(not under our code)";
          while (cur !== undefined) {
            if (OURS.test(cur.callFrame.url)) {
              owner = frameName(cur.callFrame);
              break;
            }
            const up = parent.get(cur.id);
            cur = up === undefined ? undefined : byId.get(up);
          }
          if (node.callFrame.functionName === "(idle)") owner = "(idle: waiting for network or disk)";
          add(ours, owner);
        }
      }
      const show = (title: string, m: Map<string, number>) => {
        console.log(`  ${title}:`);
        for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
          console.log(
            `    ${((100 * v) / total).toFixed(1).padStart(5)}%  ${v.toFixed(0).padStart(6)} ms  ${k}`,
          );
        }
      };
      console.log(`profile ${key}: ${profiles.length} operation(s), ${total.toFixed(0)} ms sampled`);
      show("by module of the top frame", modules);
      show("by innermost frame of our code (callees included)", ours);
      show("by top frame (self time)", self);
    }
  }
}
