// docs/settings.md is generated from the settings table; this keeps it from drifting.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { renderSettingsMarkdown } from '../src/config/help.ts';
import { SETTINGS } from '../src/config/settings.ts';

const DOC = new URL('../docs/settings.md', import.meta.url);

test('docs/settings.md is up to date with the settings table', () => {
  assert.ok(existsSync(DOC), 'docs/settings.md is missing: run npm run docs');
  const onDisk = readFileSync(DOC, 'utf8');
  const expected = renderSettingsMarkdown();
  // Not assert.equal on the whole text: a failure should say what to do, not print two long documents.
  if (onDisk !== expected) {
    const lines = onDisk.split('\n');
    const wanted = expected.split('\n');
    const differs = wanted.findIndex((line, i) => line !== lines[i]);
    const at = differs === -1 ? wanted.length : differs;
    assert.fail(
      `docs/settings.md is out of date with src/config/settings.ts: run npm run docs\n` +
        `first difference at line ${at + 1}:\n  file:      ${JSON.stringify(lines[at])}\n  generated: ${JSON.stringify(wanted[at])}`,
    );
  }
});

test('docs/settings.md documents every setting', () => {
  const doc = renderSettingsMarkdown();
  for (const entry of SETTINGS) assert.ok(doc.includes(`\n### ${entry.name}\n`), `no section for ${entry.name}`);
});
