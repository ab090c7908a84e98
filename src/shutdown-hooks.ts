import { log } from './log.js';

/**
 * Work a process must stop on its way out that no call holds open: a libvirt backup job a detached
 * cut started (QEMU would go on writing into targets no process then watches or removes).
 */
const hooks = new Set<() => Promise<void>>();

/** Registers a hook; the returned function removes it (the work ended on its own). */
export function onShutdown(hook: () => Promise<void>): () => void {
  hooks.add(hook);
  return () => hooks.delete(hook);
}

/** Runs every hook, for at most `ms` in all: a hook that hangs does not keep the process. */
export async function runShutdownHooks(ms = 10_000): Promise<void> {
  if (!hooks.size) return;
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((r) => (timer = setTimeout(r, ms)));
  await Promise.race([Promise.allSettled([...hooks].map((h) => h().catch((err: unknown) => log.error('shutdown hook failed', { err: String(err) })))), bound]);
  clearTimeout(timer);
}
