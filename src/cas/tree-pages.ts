import type { Digest } from '../digest/digest.js';
import type { Directory } from '../proto.js';
import { invalidArgument } from '../util/status-error.js';

/**
 * GetTree's pages. Every response message is one page; every page but the tree's last carries
 * a next_page_token that resumes right after it, the last an empty one (REAPI: "If empty,
 * signifies that this is the last page of results"). A token is a position in the walk, which
 * depends only on the tree, bound to the root it was issued for.
 */

/** Directories in a page when the client sets no page_size, and the most in any page. */
export const DEFAULT_TREE_PAGE_DIRECTORIES = 10_000;
/** Directory bytes in a page at most: pages stay well inside a client's 4 MiB receive limit. */
export const TREE_PAGE_BYTES = 2 * 1024 * 1024;

export interface TreePage {
  directories: Directory[];
  nextPageToken: string;
}

const TOKEN = /^v1\.(\d+)\.([0-9a-f]{16})$/;

function treePageToken(root: Digest, position: number): string {
  return Buffer.from(`v1.${position}.${root.hash.slice(0, 16)}`).toString('base64url');
}

/** The walk position a page token resumes at; INVALID_ARGUMENT when this server did not issue it for `root`. */
export function parseTreePageToken(token: string, root: Digest): number {
  const m = TOKEN.exec(Buffer.from(token, 'base64url').toString('latin1'));
  if (!m) throw invalidArgument(`page_token "${token}" was not issued by this server (pass a next_page_token of a GetTree response)`, 'page_token');
  if (m[2] !== root.hash.slice(0, 16)) throw invalidArgument(`page_token "${token}" was issued for another root directory than ${root}`, 'page_token');
  const position = Number(m[1]);
  if (!Number.isSafeInteger(position)) throw invalidArgument(`page_token "${token}" was not issued by this server`, 'page_token');
  return position;
}

/**
 * Cuts the walk of a tree into pages, from position `skip` on. A page is handed out when the
 * next directory does not fit, so the token it carries always names a directory that exists,
 * and the page the walk ends with is the one with the empty token.
 */
export class TreePager {
  private position = 0;
  private page: Directory[] = [];
  private pageBytes = 0;

  constructor(
    private readonly root: Digest,
    private readonly skip: number,
    private readonly limits: { maxDirectories: number; maxBytes: number },
  ) {}

  /** Adds the next directory of the walk; returns the page it closed, if any. */
  add(directory: Directory, bytes: number): TreePage | undefined {
    const position = this.position++;
    if (position < this.skip) return undefined;
    let closed: TreePage | undefined;
    if (this.page.length > 0 && (this.page.length >= this.limits.maxDirectories || this.pageBytes + bytes > this.limits.maxBytes)) {
      closed = { directories: this.page, nextPageToken: treePageToken(this.root, position) };
      this.page = [];
      this.pageBytes = 0;
    }
    this.page.push(directory);
    this.pageBytes += bytes;
    return closed;
  }

  /** The last page of the tree. */
  last(): TreePage {
    return { directories: this.page, nextPageToken: '' };
  }
}
