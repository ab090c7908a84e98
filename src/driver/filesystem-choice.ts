import { invalid } from '../errors.js';
import type { FsType } from '../filesystems.js';
import type { Capability } from './access.js';
import { FSTYPE_KEY } from './parameters.js';

/**
 * The filesystem a new volume is made for. The capabilities' fs_type is the source of truth: it is
 * where external-provisioner puts the class's csi.storage.k8s.io/fstype (and the legacy fsType key's
 * value, which it also passes on as a parameter). A legacy key that says otherwise, or capabilities
 * that disagree among themselves, are refused: the volume would be formatted as one and asked for as
 * the other. Undefined: nothing says (the node makes ext4 at first stage).
 */
export function chooseFilesystem(uses: readonly Capability[], legacy: FsType | undefined): FsType | undefined {
  const asked = [...new Set(uses.flatMap((c) => (c.access === 'mount' && c.fsType ? [c.fsType] : [])))];
  if (asked.length > 1) throw invalid(`the volume capabilities ask for different filesystems (${asked.join(', ')})`);
  const [fromCapability] = asked;
  if (fromCapability && legacy && legacy !== fromCapability) {
    throw invalid(`the StorageClass parameter fsType=${legacy} disagrees with the volume capability's fs_type ${fromCapability}; set the filesystem once, with ${FSTYPE_KEY}`);
  }
  return fromCapability ?? legacy;
}
