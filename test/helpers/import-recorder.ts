// Loaded with --import: registers import-hooks.js in the process under test.
import { register } from 'node:module';

register(new URL('./import-hooks.js', import.meta.url));
