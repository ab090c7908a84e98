import type { Command, Option } from 'commander';

/**
 * `vpool-csi completion bash|zsh`: a completion script made from the command tree itself, so it never
 * lags behind a new command or flag. Words are completed by where they stand: subcommands and flags
 * of the command typed so far, the choices of a flag that has them (-o, --backend, ...), files for a
 * flag that takes a path, and volume and snapshot IDs asked of the running driver (`client -o name
 * list-volumes`, at the --endpoint typed or $VPOOL_CSI_ENDPOINT, silently nothing when none answers).
 * zsh runs the same function through its bashcompinit (no variable may be called `path` there: zsh ties it to $PATH).
 */

const ID_FLAGS: Record<string, 'volumes' | 'snapshots'> = { '--id': 'volumes', '--source': 'volumes', '--from-volume': 'volumes', '--from-snapshot': 'snapshots' };
const PATH_FLAG = /path|dir|file|conf|keyring|kubeconfig|^--out$|^--from$|^--to$|^--ca$/;
const FORMATS = 'table wide json yaml name';
const KNOWN_VALUES: Record<string, string> = {
  '--fs-type': 'ext4 xfs',
  '--access-mode': 'SINGLE_NODE_WRITER SINGLE_NODE_READER_ONLY SINGLE_NODE_SINGLE_WRITER SINGLE_NODE_MULTI_WRITER MULTI_NODE_READER_ONLY MULTI_NODE_SINGLE_WRITER MULTI_NODE_MULTI_WRITER',
  '--log-level': 'error warn info debug',
};

interface Node {
  path: string;
  words: string[];
  /** Flags that take a value, with what completes it. */
  valued: Array<{ flags: string[]; complete: string }>;
}

function walk(c: Command, prefix: string, out: Node[]): void {
  const options = (c.options as readonly Option[]).filter((o) => !o.hidden);
  const words = [...c.commands.map((s) => s.name()), ...options.flatMap((o) => [o.long, o.short].filter((f): f is string => !!f)), '--help'];
  const valued = options
    .filter((o) => o.required || o.optional)
    .map((o) => {
      const flags = [o.long, o.short].filter((f): f is string => !!f);
      const long = o.long ?? '';
      const ids = long === '--id' && /snapshot/.test(prefix) ? 'snapshots' : ID_FLAGS[long];
      const known = KNOWN_VALUES[long];
      const complete = o.argChoices ? `words ${o.argChoices.join(' ')}` : long === '--output' ? `words ${FORMATS}` : known ? `words ${known}` : ids && prefix.startsWith('client') ? `ids ${ids}` : PATH_FLAG.test(long) ? 'files' : 'none';
      return { flags, complete };
    });
  out.push({ path: prefix, words, valued });
  for (const s of c.commands) walk(s, prefix ? `${prefix} ${s.name()}` : s.name(), out);
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function bashCompletion(program: Command): string {
  const nodes: Node[] = [];
  walk(program, '', nodes);
  const wordsCase = nodes.map((n) => `    ${q(n.path)}) echo ${q(n.words.join(' '))} ;;`).join('\n');
  const valueCase = nodes
    .flatMap((n) => n.valued.map((v) => `    ${v.flags.map((f) => q(`${n.path} ${f}`.trim())).join('|')}) echo ${q(v.complete)} ;;`))
    .join('\n');
  return `# vpool-csi completion for bash: source <(vpool-csi completion bash)
_vpool_csi_words() {
  case "$1" in
${wordsCase}
  esac
}
_vpool_csi_value() {
  case "$1" in
${valueCase}
    *) return 1 ;;
  esac
}
_vpool_csi_ids() {
  # At most 2 s: a Tab press never hangs on a driver that does not answer.
  local bin=$1 kind=$2 ep=$3
  if [ -n "$ep" ]; then set -- --endpoint "$ep"; else set --; fi
  timeout 2 "$bin" client "$@" -o name "list-$kind" 2>/dev/null | sed 's#^[a-z]*/##'
}
_vpool_csi() {
  local -a words
  local cur cword words_so_far="" ep="" i w how id
  if [ -n "\${ZSH_VERSION-}" ] || [ -z "\${COMP_LINE-}" ]; then
    words=("\${COMP_WORDS[@]:0:$((COMP_CWORD + 1))}")
  else
    # The line's own words, split at blanks only: bash's COMP_WORDS are also split at ':' (COMP_WORDBREAKS), which cuts unix:///path.
    local line=\${COMP_LINE:0:COMP_POINT}
    read -r -a words <<< "$line"
    if [ -z "$line" ] || [[ $line == *[[:space:]] ]]; then words+=(""); fi
  fi
  cword=$((\${#words[@]} - 1))
  cur=\${words[cword]}
  COMPREPLY=()
  for ((i = 1; i < cword; i++)); do
    w=\${words[i]}
    if [ "$w" = --endpoint ]; then ep=\${words[i + 1]}; fi
    if [[ $w == -* ]]; then
      _vpool_csi_value "\${words_so_far# } $w" >/dev/null && i=$((i + 1))
    elif [[ " $(_vpool_csi_words "\${words_so_far# }") " == *" $w "* ]]; then
      words_so_far="$words_so_far $w"
    fi
  done
  words_so_far=\${words_so_far# }
  if [ "$cword" -gt 1 ] && how=$(_vpool_csi_value "$words_so_far \${words[cword - 1]}"); then
    case "$how" in
      words\\ *) COMPREPLY=($(compgen -W "\${how#words }" -- "$cur")) ;;
      ids\\ *)
        # Filtered here, not by compgen -W (which would expand what the driver returned).
        while IFS= read -r id; do [[ $id == "$cur"* ]] && COMPREPLY+=("$id"); done < <(_vpool_csi_ids "\${words[0]}" "\${how#ids }" "$ep") ;;
      files) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
    return 0
  fi
  COMPREPLY=($(compgen -W "$(_vpool_csi_words "$words_so_far")" -- "$cur"))
}
complete -o default -F _vpool_csi vpool-csi
`;
}

export function zshCompletion(program: Command): string {
  return `# vpool-csi completion for zsh: source <(vpool-csi completion zsh)
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }
(( $+functions[complete] )) || { autoload -U +X bashcompinit && bashcompinit; }
${bashCompletion(program).split('\n').slice(1).join('\n')}`;
}

export function addCompletionCommand(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script: source <(vpool-csi completion bash), or zsh')
    .argument('<shell>', 'bash or zsh')
    .action((shell: string) => {
      if (shell !== 'bash' && shell !== 'zsh') throw Object.assign(new Error(`completion ${shell}: bash or zsh`), { name: 'UsageError' });
      process.stdout.write(shell === 'bash' ? bashCompletion(program) : zshCompletion(program));
    });
}
