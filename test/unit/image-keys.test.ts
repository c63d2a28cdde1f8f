import { describe, expect, it } from 'vitest';
import { imageCandidateKeys } from '../../src/backend/image-keys.js';

describe('imageCandidateKeys', () => {
  it('tries the most specific key first, as travis does, in lower case', () => {
    const keys = imageCandidateKeys({ language: 'Ruby', dist: 'xenial', group: 'stable', os: 'linux' });
    expect(keys.slice(0, 4)).toEqual(['dist_xenial_group_stable_ruby', 'xenial_stable_ruby', 'dist_xenial_ruby', 'xenial_ruby']);
    expect(keys.indexOf('ruby')).toBeLessThan(keys.indexOf('linux'));
    expect(keys.at(-1)).toBe('linux');
  });

  it('puts the osx image first for osx jobs', () => {
    const keys = imageCandidateKeys({ language: 'objective-c', dist: 'xenial', group: 'stable', os: 'osx', osxImage: 'xcode9' });
    expect(keys.slice(0, 2)).toEqual(['osx_image_xcode9_objective-c', 'osx_image_xcode9']);
  });
});
