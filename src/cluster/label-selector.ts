/**
 * Whether labels match an equality-based label selector (`a=b,c!=d,e,!f`), as the API server reads
 * one: what a list by that selector would return is what this accepts. Set-based terms (`in`,
 * `notin`) are refused rather than guessed at.
 */
export function matchesSelector(selector: string, labels: Record<string, string>): boolean {
  return selector
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean)
    .every((term) => {
      if (/\s(in|notin)\s/.test(term)) throw new Error(`set-based label selectors are not supported: ${term}`);
      if (term.startsWith('!')) return !(term.slice(1) in labels);
      const ne = /^([^!=]+)!=(.*)$/.exec(term);
      if (ne) return labels[ne[1]] !== ne[2];
      const eq = /^([^=]+)==?(.*)$/.exec(term);
      if (eq) return labels[eq[1]] === eq[2];
      return term in labels;
    });
}
