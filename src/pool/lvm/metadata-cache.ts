import type { LvmCli, LvmState } from './lvm-cli.js';

/**
 * What the pool reads of its VG: the VG row, its PVs (their free space and tier tags) and its LVs.
 */
export type VgMetadata = LvmState;

interface Held {
  /** The metadata area headers read before the report the state came from. */
  fingerprint: string;
  /** The seqno those headers' text carried; the state is that version when it equals the state's own. */
  seqno: number | null;
  state: VgMetadata;
}

/**
 * A VG's metadata held in memory while the metadata on its PVs is unchanged. The disks are the
 * truth: every read compares the metadata area headers (a few preads, no lvm) with those the held
 * state was read under, and any commit by any process changes them, so the next read is a fresh
 * `lvm fullreport`, the driver's own commits included: every row is lvm's own report, none is made
 * here. The header reads are asynchronous and bounded (pv-headers.ts): a PV that does not answer
 * fails the read at once as unavailable (lvm would hang on it too) and never stalls the event loop. Only
 * what the metadata holds is kept (names, sizes, tags, origins); activation, open counts and health
 * come from device-mapper and are read fresh where they matter.
 */
export class MetadataCache {
  private held?: Held;

  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
  ) {}

  async read(): Promise<VgMetadata> {
    const before = await this.lvm.metadataVersion();
    if (before !== null && this.held?.fingerprint === before.fingerprint) return this.held.state;
    // Callers that find the same headers share one report (8 creates at once make one fullreport, not 8):
    // with the headers unchanged since that report began, no commit can be missing from it.
    if (before !== null && this.reading?.fingerprint === before.fingerprint) return this.reading.state;
    const state = this.lvm.state(this.vg).then(({ vg, pvs, lvs }) => ({ vg, pvs: pvs.filter((p) => p.vg_name === this.vg), lvs }));
    const reading = before === null ? undefined : { fingerprint: before.fingerprint, state };
    this.reading = reading;
    try {
      const read = await state;
      // Keyed by the headers read before the report: a commit in between makes the key stale, never the state.
      const newer = this.held && this.held.seqno !== null && before?.seqno != null && this.held.seqno > before.seqno;
      if (!newer) this.held = before === null ? undefined : { fingerprint: before.fingerprint, seqno: before.seqno, state: read };
      return read;
    } finally {
      if (this.reading === reading) this.reading = undefined;
    }
  }

  private reading?: { fingerprint: string; state: Promise<VgMetadata> };

  /** Forgets the held state (a change the driver cannot describe). */
  drop(): void {
    this.held = undefined;
  }
}
