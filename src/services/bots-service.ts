import type * as grpc from '@grpc/grpc-js';
import type { BotSessions } from '../bots/bot-sessions.js';
import { rw } from '../proto.js';
import type { Logger } from '../util/logger.js';
import { invalidArgument } from '../util/status-error.js';
import { method, unary } from './grpc-adapters.js';

const BOTS = 'google.devtools.remoteworkers.v1test2.Bots';

export const botsDefinition = {
  CreateBotSession: method(BOTS, 'CreateBotSession', rw.CreateBotSessionRequest, rw.BotSession),
  UpdateBotSession: method(BOTS, 'UpdateBotSession', rw.UpdateBotSessionRequest, rw.BotSession),
};

/** The Remote Workers API's Bots service (buildbox-worker): a thin adapter over BotSessions. */
export function botsService(log: Logger, sessions: BotSessions): grpc.UntypedServiceImplementation {
  return {
    CreateBotSession: unary(log, 'CreateBotSession', async (req: rw.CreateBotSessionRequest, ctx) => {
      if (!req.botSession) throw invalidArgument('bot_session is missing', 'bot_session');
      return sessions.create(req.parent, req.botSession, ctx.peer);
    }),
    UpdateBotSession: unary(log, 'UpdateBotSession', async (req: rw.UpdateBotSessionRequest, ctx) => {
      if (!req.name) throw invalidArgument('name is empty: pass the name CreateBotSession returned', 'name');
      if (req.botSession?.name && req.botSession.name !== req.name) throw invalidArgument(`bot_session.name "${req.botSession.name}" differs from name "${req.name}"`, 'bot_session.name');
      return sessions.update(req.name, req.botSession, ctx.deadline ?? Number.POSITIVE_INFINITY, ctx.signal);
    }),
  };
}
