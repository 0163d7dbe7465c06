import { UsageError, type Io } from "../cli/io.js";

/**
 * The CLI's I/O for a test: what it prints is kept line by line, standard input has ended (a prompt is a
 * UsageError), and the test key derivation is on (MLS_DM_INSECURE_TEST_KDF) unless `env` says otherwise.
 */
export function capturedIo(env: Record<string, string> = {}): Io & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return {
    stdout,
    stderr,
    out: (t) => stdout.push(t),
    err: (t) => stderr.push(t),
    env: { MLS_DM_INSECURE_TEST_KDF: "1", ...env },
    stdinIsTty: false,
    stderrIsTty: false,
    readLine: () => Promise.reject(new UsageError("no input: standard input ended")),
    readSecret: () => Promise.reject(new UsageError("no input: standard input ended")),
  };
}
