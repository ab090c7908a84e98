/** Sentinel errors a backend throws; the CSI layer maps them to gRPC codes in one place. */
export class PoolSpaceError extends Error {
  override name = 'PoolSpaceError';
}

export class SourceMissingError extends Error {
  override name = 'SourceMissingError';
}
