// The local stand-in for Amazon DocumentDB: mongo-java-server's memory backend with its oplog
// (change streams) on, plus SCRAM-SHA-1 authentication, which mongo-java-server lacks, and
// the operationTime of an aggregate reply, which drivers need to open a change stream; change
// events get the ns and update documentKey that mongo-java-server leaves out, and a resume
// token from before the server started is refused as ChangeStreamHistoryLost (see the methods).
//
//   java -cp <classes>:<libs>/* EsmdMongoServer HOST PORT [USER:PASSWORD ...]
//
// Authentication is checked, not required: a client that offers credentials must offer right
// ones (a wrong password fails with AuthenticationFailed, code 18, as DocumentDB answers);
// a client that offers none is served anyway, so tests need no secret unless they test one.
// Compiled by service/devtools/servers.py; no dependency beyond mongo-java-server's jars.

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Base64;
import java.time.Instant;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

import javax.crypto.Mac;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.crypto.spec.SecretKeySpec;

import de.bwaldvogel.mongo.MongoServer;
import de.bwaldvogel.mongo.backend.memory.MemoryBackend;
import de.bwaldvogel.mongo.bson.BinData;
import de.bwaldvogel.mongo.bson.BsonTimestamp;
import de.bwaldvogel.mongo.bson.Document;
import de.bwaldvogel.mongo.exception.MongoServerError;
import io.netty.channel.Channel;

public final class EsmdMongoServer {

    public static void main(String[] args) throws Exception {
        Map<String, String> users = new HashMap<>();
        for (int i = 2; i < args.length; i++) {
            String[] parts = args[i].split(":", 2);
            users.put(parts[0], parts[1]);
        }
        MongoServer server = new MongoServer(new ScramBackend(users));
        server.enableOplog();
        server.bind(args[0], Integer.parseInt(args[1]));
        System.out.println("esmd mongo server listening on " + args[0] + ":" + args[1]);
        Thread.currentThread().join();
    }

    /** The memory backend, with saslStart / saslContinue for SCRAM-SHA-1. */
    static final class ScramBackend extends MemoryBackend {
        private static final int ITERATIONS = 4096;
        private final Map<String, String> users;
        private final Map<Channel, Conversation> conversations = new ConcurrentHashMap<>();
        private final SecureRandom random = new SecureRandom();
        private final Instant started = Instant.now();

        ScramBackend(Map<String, String> users) {
            this.users = users;
        }

        @Override
        public Document handleCommand(Channel channel, String databaseName, String command, Document query) {
            if (command.equalsIgnoreCase("saslStart")) {
                return saslStart(channel, query);
            }
            if (command.equalsIgnoreCase("saslContinue")) {
                return saslContinue(channel, query);
            }
            boolean aggregate = command.equalsIgnoreCase("aggregate");
            if (aggregate) {
                checkResumeToken(query);
            }
            Document response = super.handleCommand(channel, databaseName, command, query);
            if (aggregate && !response.containsKey("operationTime")) {
                // as a replica set member answers: drivers note where a change stream began
                response.put("operationTime", new BsonTimestamp(getClock().instant(), 0));
            }
            if (aggregate || command.equalsIgnoreCase("getMore")) {
                completeChangeEvents(response);
            }
            return response;
        }

        /**
         * A resume token from before this server started names history it never had (its
         * oplog lives in memory): refused as MongoDB and DocumentDB refuse a token whose
         * position has left the oplog, ChangeStreamHistoryLost (286).
         */
        private void checkResumeToken(Document query) {
            if (!(query.get("pipeline") instanceof List<?> pipeline) || pipeline.isEmpty()
                || !(pipeline.get(0) instanceof Document first)
                || !(first.get("$changeStream") instanceof Document stage)) {
                return;
            }
            Object token = stage.get("resumeAfter") != null ? stage.get("resumeAfter") : stage.get("startAfter");
            if (!(token instanceof Document tokenDocument)) {
                return;
            }
            long position;
            try {
                position = Long.parseUnsignedLong(String.valueOf(tokenDocument.get("_data")), 16);
            } catch (NumberFormatException e) {
                throw new MongoServerError(280, "ChangeStreamFatalError", "malformed resume token");
            }
            if ((position >>> 32) < started.getEpochSecond()) {
                throw new MongoServerError(286, "ChangeStreamHistoryLost",
                    "Resume of change stream was not possible, as the resume point may no longer be in the oplog.");
            }
        }

        /**
         * mongo-java-server 1.47 leaves ``ns`` out of change events and puts the update
         * specification where an update's ``documentKey`` belongs; both come from the oplog
         * entry (ns, o2), as in MongoDB and DocumentDB. A delete has no ``fullDocument``.
         */
        private void completeChangeEvents(Document response) {
            if (!(response.get("cursor") instanceof Document cursor)) {
                return;
            }
            Object batch = cursor.containsKey("firstBatch") ? cursor.get("firstBatch") : cursor.get("nextBatch");
            if (!(batch instanceof List<?> events) || events.isEmpty()) {
                return;
            }
            Set<Long> wanted = new HashSet<>();
            for (Object event : events) {
                if (event instanceof Document change && change.get("clusterTime") instanceof BsonTimestamp ts
                    && change.containsKey("operationType") && !change.containsKey("ns")) {
                    wanted.add(ts.getValue());
                }
            }
            if (wanted.isEmpty()) {
                return;
            }
            Map<Long, Document> entries = new HashMap<>();
            resolveDatabase("local").resolveCollection("oplog.rs", true).queryAllAsStream()
                .filter(entry -> entry.get("ts") instanceof BsonTimestamp ts && wanted.contains(ts.getValue()))
                .forEach(entry -> entries.put(((BsonTimestamp) entry.get("ts")).getValue(), entry));
            for (Object event : events) {
                Document change = (Document) event;
                Document entry = change.get("clusterTime") instanceof BsonTimestamp ts ? entries.get(ts.getValue()) : null;
                if (entry == null) {
                    continue;
                }
                String namespace = String.valueOf(entry.get("ns"));
                int dot = namespace.indexOf('.');
                change.put("ns", new Document("db", namespace.substring(0, dot)).append("coll", namespace.substring(dot + 1)));
                if ("update".equals(change.get("operationType")) && entry.get("o2") instanceof Document key) {
                    change.put("documentKey", new Document("_id", key.get("_id")));
                }
                if ("delete".equals(change.get("operationType")) && change.get("fullDocument") == null) {
                    change.remove("fullDocument");
                }
            }
        }

        @Override
        public void handleClose(Channel channel) {
            conversations.remove(channel);
            super.handleClose(channel);
        }

        private Document saslStart(Channel channel, Document query) {
            if (!"SCRAM-SHA-1".equals(query.get("mechanism"))) {
                throw new MongoServerError(2, "BadValue", "only SCRAM-SHA-1 is supported");
            }
            String clientFirst = text(query.get("payload"));
            String bare = clientFirst.substring(clientFirst.indexOf(",,") + 2);
            Map<String, String> fields = parse(bare);
            String user = fields.get("n").replace("=2C", ",").replace("=3D", "=");
            byte[] salt = new byte[16];
            random.nextBytes(salt);
            byte[] serverNonce = new byte[18];
            random.nextBytes(serverNonce);
            String nonce = fields.get("r") + Base64.getEncoder().encodeToString(serverNonce);
            String serverFirst = "r=" + nonce + ",s=" + Base64.getEncoder().encodeToString(salt)
                + ",i=" + ITERATIONS;
            conversations.put(channel, new Conversation(user, bare, serverFirst, nonce, salt));
            return reply(false, serverFirst);
        }

        private Document saslContinue(Channel channel, Document query) {
            Conversation conversation = conversations.remove(channel);
            if (conversation == null) {
                throw failed();
            }
            String clientFinal = text(query.get("payload"));
            Map<String, String> fields = parse(clientFinal);
            String withoutProof = clientFinal.substring(0, clientFinal.lastIndexOf(",p="));
            String password = users.get(conversation.user);
            if (password == null || !conversation.nonce.equals(fields.get("r"))) {
                throw failed();
            }
            try {
                String authMessage = conversation.clientFirstBare + "," + conversation.serverFirst + ","
                    + withoutProof;
                byte[] salted = saltedPassword(conversation.user, password, conversation.salt);
                byte[] clientKey = hmac(salted, "Client Key");
                byte[] storedKey = MessageDigest.getInstance("SHA-1").digest(clientKey);
                byte[] signature = hmac(storedKey, authMessage);
                byte[] proof = Base64.getDecoder().decode(fields.get("p"));
                if (proof.length != signature.length) {
                    throw failed();
                }
                byte[] recovered = new byte[proof.length];
                for (int i = 0; i < proof.length; i++) {
                    recovered[i] = (byte) (proof[i] ^ signature[i]);
                }
                if (!MessageDigest.isEqual(MessageDigest.getInstance("SHA-1").digest(recovered), storedKey)) {
                    throw failed();
                }
                byte[] serverSignature = hmac(hmac(salted, "Server Key"), authMessage);
                return reply(true, "v=" + Base64.getEncoder().encodeToString(serverSignature));
            } catch (java.security.GeneralSecurityException e) {
                throw new MongoServerError(1, "InternalError", e.toString());
            }
        }

        private static MongoServerError failed() {
            return new MongoServerError(18, "AuthenticationFailed", "Authentication failed.");
        }

        private static Document reply(boolean done, String payload) {
            Document response = new Document("conversationId", 1);
            response.put("done", done);
            response.put("payload", new BinData(payload.getBytes(StandardCharsets.UTF_8)));
            response.put("ok", 1.0);
            return response;
        }

        private static String text(Object payload) {
            byte[] data = payload instanceof BinData bin ? bin.getData() : (byte[]) payload;
            return new String(data, StandardCharsets.UTF_8);
        }

        private static Map<String, String> parse(String message) {
            Map<String, String> fields = new HashMap<>();
            for (String part : message.split(",")) {
                int eq = part.indexOf('=');
                if (eq == 1) {
                    fields.put(part.substring(0, 1), part.substring(2));
                }
            }
            return fields;
        }

        /** MongoDB's SCRAM-SHA-1 password: hex(MD5("user:mongo:password")), then PBKDF2. */
        private static byte[] saltedPassword(String user, String password, byte[] salt)
            throws java.security.GeneralSecurityException {
            byte[] md5 = MessageDigest.getInstance("MD5")
                .digest((user + ":mongo:" + password).getBytes(StandardCharsets.UTF_8));
            StringBuilder hex = new StringBuilder();
            for (byte b : md5) {
                hex.append(String.format("%02x", b));
            }
            PBEKeySpec spec = new PBEKeySpec(hex.toString().toCharArray(), salt, ITERATIONS, 160);
            return SecretKeyFactory.getInstance("PBKDF2WithHmacSHA1").generateSecret(spec).getEncoded();
        }

        private static byte[] hmac(byte[] key, String message) throws java.security.GeneralSecurityException {
            Mac mac = Mac.getInstance("HmacSHA1");
            mac.init(new SecretKeySpec(key, "HmacSHA1"));
            return mac.doFinal(message.getBytes(StandardCharsets.UTF_8));
        }
    }

    private record Conversation(String user, String clientFirstBare, String serverFirst, String nonce, byte[] salt) {
    }
}
