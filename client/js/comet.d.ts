// Type declarations of comet.js, Comet's browser client (docs/browser.md).

export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';
export type TransportName = 'websocket' | 'sockjs' | 'socketio';

/** A channel's message, as given to handlers and "channel" events. */
export interface Message<T = unknown> {
  channel: string;
  /** Position in the channel: 1, 2, 3, ... within an epoch. */
  offset: number;
  epoch: string;
  /** Exactly as published. */
  data: T;
  /** True for a message that was already in the channel when the
   * subscription was made or made again after a reconnect. */
  replayed: boolean;
}

/** The gateway's answer to a subscribe, and what the client asked. */
export interface SubscribedInfo {
  channel: string;
  epoch: string;
  /** False when messages the client asked for are gone; see lost. */
  recovered: boolean;
  /** Oldest offset still held; offset the next message will get. */
  first: number;
  next: number;
  /** Position asked for: from 0 for live only. */
  from: number;
  fromEpoch: string;
  /** When recovered is false: the offsets missed for good (to is null
   * when the channel's history was reset: a new epoch). */
  lost?: { from: number; to: number | null; epochChanged: boolean };
}

export interface Ack {
  channel: string;
  offset: number;
  epoch: string;
  /** True when the publish was a retry of an id already stored (the
   * client's own, after a reconnect, or a reused id): offset is the first
   * one's, and nothing new was stored. */
  duplicate: boolean;
}
export interface Position { offset: number; epoch: string; }

export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the connection had been open ("connected" received). */
  wasOpen: boolean;
  /** How long it was open, in ms. */
  openFor: number;
  transport: TransportName;
  url: string;
  /** When the application asked to reconnect after a delay (ms). */
  retryIn?: number;
}

export interface OpenInfo {
  transport: TransportName;
  /** SockJS's own transport (e.g. "xhr-streaming"), or null. */
  detail: string | null;
  url: string;
  connection: string;
  /** The user the gateway authenticated (the token's sub); null when
   * anonymous. */
  user: string | null;
}

/** A transport made by createTransport (tests, exotic environments). */
export interface Transport { send(text: string): void; close(code: number, reason: string): void; }
export interface TransportHandlers {
  open(detail?: string): void;
  /** A server frame as text, or one decoded object. */
  message(text: string | Record<string, unknown>): void;
  close(code: number, reason: string): void;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(t: unknown): void;
}

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A plugin: installed by open(), its teardown called by close(). A plugin
 * with reconnects: true reconnects the client after a drop (autoReconnect). */
export interface Plugin {
  name: string;
  reconnects?: boolean;
  install(comet: Comet): void | (() => void);
}

export interface AutoReconnectOptions {
  /** Bounds of the delay between attempts, ms (defaults 100 and 10000). */
  minRetry?: number;
  maxRetry?: number;
  /** A connection up this long starts the backoff again (default 5000). */
  stableAfter?: number;
  /** How long a ping may take when the page comes back online or into
   * view, before the connection is dropped as dead (default 5000). */
  probeTimeout?: number;
}

export interface Options {
  /** Gateways' WebSocket URLs ("/ws" and http(s) URLs are resolved against
   * the page); "{workerIndex}" expands to 0..workersCount-1. Default "/ws". */
  urls?: string | string[];
  workersCount?: number;
  /** SockJS URLs, one per URL; default: each URL with ws->http, /ws->/sockjs. */
  sockjsUrls?: string | string[];
  /** Socket.IO endpoints, one per URL; default: each URL with ws->http,
   * /ws->/socket.io/. */
  socketioUrls?: string | string[];
  /** Tried in this order (default ['websocket', 'sockjs']; 'socketio' only
   * when listed). */
  transports?: TransportName[];
  /** Connect at once (default true). */
  autoOpen?: boolean;
  /** The built-in reconnect plugin: true (default), false, or its options. */
  autoReconnect?: boolean | AutoReconnectOptions;
  /** Bounds of the reconnect and retry backoff, ms (defaults 100, 10000). */
  minRetry?: number;
  maxRetry?: number;
  plugins?: Plugin[];
  /** Timeout of request() and ping(), and of a publish's ack before it is
   * sent again (default 10000 ms). */
  requestTimeout?: number;
  /** How many publishes may be sent and wait for their acks at once
   * (default 256, the gateway's own bound per connection); the others wait
   * their turn, in call order. */
  maxPublishesInFlight?: number;
  /** How long a connection may take to say "connected" (default 10000 ms). */
  connectTimeout?: number;
  /** How often the client pings (default 25000 ms). A connection from
   * which nothing was heard between two pings is dropped as dead. */
  pingInterval?: number;
  /** Where positions are kept: localStorage by default; null: memory only. */
  storage?: StorageLike | null;
  /** Prefix of storage keys (default "comet:"). */
  storagePrefix?: string;
  /** Positions reach storage within this (default 100 ms), and at once
   * when the page is hidden or left. */
  saveDelay?: number;
  /** The JWT to authenticate with, sent in a connect frame first on every
   * connection (not in the URL). A function is called before every
   * connection and again at 80% of the token's remaining lifetime (its exp,
   * read without verifying), and the fresh token sent on the live
   * connection; a string is sent as is and never refreshed. None, or an
   * empty token: anonymous. */
  token?: string | (() => string | Promise<string>);
  /** A JSON object describing this client (at most 1 KiB), sent in the
   * connect frame; others see it in presence. */
  info?: Record<string, unknown>;
  /** The SockJS constructor, or where to load it from (default
   * sockjs.min.js beside comet.js), and options for it. */
  SockJS?: unknown;
  sockjsScript?: string;
  sockjsOptions?: Record<string, unknown>;
  /** socket.io-client's io function, for the socketio transport (default:
   * the page's global io), and options for it (path, reconnection and
   * forceNew are comet.js's). */
  io?: (url: string, options?: Record<string, unknown>) => unknown;
  socketioOptions?: Record<string, unknown>;
  createTransport?: (name: TransportName, url: string, h: TransportHandlers) => Transport;
  clock?: Clock;
  random?: () => number;
}

export interface SubscribeOptions {
  /** First offset wanted (1: all history still held), instead of the
   * remembered position or, without one, live messages only. */
  from?: number;
  /** The epoch that from belongs to. */
  epoch?: string;
  /** Without from or a remembered position: start with the newest `last`
   * messages (a rewind; 1 is "the latest value"), then live ones. */
  last?: number;
  /** Called when a connection subscribes to the channel, or goes (where
   * its namespace has join_leave). */
  onJoin?: (e: { channel: string; conn: string; user: string | null }) => void;
  onLeave?: (e: { channel: string; conn: string; user: string | null }) => void;
  /** Called with every answer to this subscription's subscribes. */
  onSubscribed?: (info: SubscribedInfo) => void;
}

export class Subscription<T = unknown> {
  readonly channel: string;
  readonly state: 'subscribing' | 'subscribed' | 'unsubscribed';
  /** The last offset delivered (or skipped as gone). */
  readonly last: number;
  readonly epoch: string;
  readonly hasPos: boolean;
  /** Resolves at the first "subscribed"; rejects on a refusal. */
  readonly ready: Promise<SubscribedInfo>;
  unsubscribe(): Promise<void>;
}

export class CometError extends Error {
  constructor(code: string, message: string, cause?: unknown);
  /** An error frame's code, or "closed", "unavailable", "timeout", or
   * "token" (the token function failed: cause is its error). */
  readonly code: string;
  channel?: string;
}

export interface Events {
  state: (state: State, previous: State) => void;
  /** A connection subscribed to, or left, a channel this client is on
   * (where its namespace has join_leave). */
  join: (e: { channel: string; conn: string; user: string | null }) => void;
  leave: (e: { channel: string; conn: string; user: string | null }) => void;
  open: (info: OpenInfo) => void;
  close: (info: CloseInfo) => void;
  /** Every object of every server frame, decoded. */
  message: (frame: Record<string, unknown>) => void;
  /** Every message delivered, of any channel. */
  channel: (m: Message) => void;
  /** Each frame before it is sent; listeners may change it. */
  beforeSend: (frame: Record<string, unknown>) => void;
  /** A direct message: sent to this connection alone (by a worker), with
   * no channel and no offset. */
  direct: (data: unknown) => void;
  /** A connection attempt failed for want of a valid token: the gateway
   * refused it or it expired (code "forbidden", closed with 4006), or the
   * token function failed (code "token"). The client gets a new token and
   * reconnects, after a backoff. */
  auth: (err: CometError) => void;
  subscribed: (info: SubscribedInfo) => void;
  /** A subscribe answered recovered: false. */
  lost: (info: SubscribedInfo) => void;
  /** From autoReconnect: the next attempt in delay ms. */
  reconnect: (info: { delay: number; offline: boolean }) => void;
  error: (err: Error) => void;
}

export class Comet {
  constructor(options?: Options);
  readonly state: State;
  readonly transport: TransportName | null;
  readonly url: string | null;
  readonly connection: string | null;
  /** The user of the open connection (the token's sub); null when
   * anonymous or not open. */
  readonly user: string | null;
  on<E extends keyof Events>(event: E, fn: Events[E]): () => void;
  on(event: `channel:${string}`, fn: (m: Message) => void): () => void;
  once<E extends keyof Events>(event: E, fn: Events[E]): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
  emit(event: string, ...args: unknown[]): void;
  use(plugin: Plugin): this;
  open(): this;
  close(): this;
  reconnect(options?: { delay?: number }): this;
  subscribe<T = unknown>(channel: string, handler?: ((m: Message<T>) => void) | null, options?: SubscribeOptions): Subscription<T>;
  position(channel: string): Position | null;
  forget(channel: string): void;
  /** Resolves once the message is stored. Many may be in flight: they are
   * sent in call order, maxPublishesInFlight at most waiting for acks, and
   * after a reconnect the unacknowledged ones are sent again, same ids,
   * same order, before any new one. id: the idempotency key, unique per
   * message (default random). timeout: fail with code "timeout" after
   * this many ms (the message may still be stored). */
  publish(channel: string, data: unknown, options?: { id?: string; timeout?: number }): Promise<Ack>;
  request<T = unknown>(route: string, data?: unknown, options?: { timeout?: number }): Promise<T>;
  /** A page of a channel's history, from the hubs' log; asked again after
   * a reconnect. */
  history<T = unknown>(channel: string, options?: HistoryOptions): Promise<HistoryPage<T>>;
  /** Who is subscribed to a channel, on every gateway (all pages). */
  presence(channel: string, options?: { limit?: number; timeout?: number }): Promise<{ conn: string; user?: string }[]>;
  /** How many connections are subscribed, and how many distinct users. */
  presenceStats(channel: string, options?: { timeout?: number }): Promise<{ connections: number; users: number }>;
  ping(options?: { timeout?: number }): Promise<void>;
}

export interface HistoryOptions {
  /** Most messages returned (default 100, at most 1000). */
  limit?: number;
  /** Messages after this offset (page forwards with the last one seen). */
  since?: number;
  /** Messages before this offset (page backwards, with reverse). */
  before?: number;
  /** Messages stored at or after this time. */
  sinceTime?: Date | string;
  /** Newest first. */
  reverse?: boolean;
  timeout?: number;
}

export interface HistoryPage<T = unknown> {
  channel: string;
  epoch: string;
  /** The oldest offset held, and the offset the next message will get. */
  first: number;
  next: number;
  messages: { offset: number; data: T; time: string }[];
}

export function autoReconnect(options?: AutoReconnectOptions): Plugin;
export function loadSockJS(src?: string): Promise<unknown>;
export function splitFrame(text: string, onBad?: (line: string) => void): Record<string, unknown>[];
export function expandUrls(urls: string | string[], workersCount?: number, base?: string): string[];
export function sockjsUrlFor(wsUrl: string): string;
export function socketioUrlFor(wsUrl: string): string;
export function randomId(bytes?: number): string;
/** A JWT's exp claim in ms since the epoch, read without verifying; 0 if none. */
export function tokenExpiry(token: string): number;
export class Backoff {
  constructor(min?: number, max?: number, random?: () => number);
  next(): number;
  reset(): void;
}
export default Comet;
