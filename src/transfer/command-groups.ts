/** The calls the router may hand a node (transfer/commands.ts), here apart so that a flag is checked without loading the channel. */
export const COMMANDS = ['CreateSnapshot', 'DeleteSnapshot', 'ListSnapshots', 'CreateVolumeGroupSnapshot', 'DeleteVolumeGroupSnapshot', 'GetVolumeGroupSnapshot', 'ControllerModifyVolume'] as const;
export type CommandName = (typeof COMMANDS)[number];

/** What a node may be told to take from the router, by feature: a router certificate can do no more than the node allows. */
export const COMMAND_GROUPS: Readonly<Record<string, readonly CommandName[]>> = {
  snapshots: ['CreateSnapshot', 'DeleteSnapshot', 'ListSnapshots', 'CreateVolumeGroupSnapshot', 'DeleteVolumeGroupSnapshot', 'GetVolumeGroupSnapshot'],
  modify: ['ControllerModifyVolume'],
};

/** The commands of the named groups ("snapshots,modify"); throws on a name that is none. */
export function commandsOf(groups: string): ReadonlySet<CommandName> {
  const out = new Set<CommandName>();
  for (const g of groups.split(',').map((x) => x.trim()).filter(Boolean)) {
    if (!Object.hasOwn(COMMAND_GROUPS, g)) throw new Error(`--transfer-router-takes names ${Object.keys(COMMAND_GROUPS).join(' and ')}, not ${JSON.stringify(g)}`);
    for (const c of COMMAND_GROUPS[g]!) out.add(c);
  }
  return out;
}

