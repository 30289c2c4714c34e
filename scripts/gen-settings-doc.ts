// Writes docs/settings.md from the settings table (a test checks it is up to date).
import { writeFileSync } from 'node:fs';
import { renderSettingsMarkdown } from '../src/config/help.ts';

writeFileSync(new URL('../docs/settings.md', import.meta.url), renderSettingsMarkdown());
