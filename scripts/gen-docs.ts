// Writes docs/settings.md from the settings table and the README's exit-code table from src/errors.ts
// (tests check both are up to date).
import { readFileSync, writeFileSync } from 'node:fs';
import { renderSettingsMarkdown } from '../src/config/help.ts';
import { withExitCodeTable } from './readme.ts';

writeFileSync(new URL('../docs/settings.md', import.meta.url), renderSettingsMarkdown());
const readme = new URL('../README.md', import.meta.url);
writeFileSync(readme, withExitCodeTable(readFileSync(readme, 'utf8')));
