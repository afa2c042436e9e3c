import java.io.File;
import java.util.HashMap;
import java.util.Map;

import org.apache.activemq.RedeliveryPolicy;
import org.apache.activemq.broker.Broker;
import org.apache.activemq.broker.BrokerFilter;
import org.apache.activemq.broker.BrokerPlugin;
import org.apache.activemq.broker.BrokerService;
import org.apache.activemq.broker.ConnectionContext;
import org.apache.activemq.broker.region.Subscription;
import org.apache.activemq.broker.region.policy.IndividualDeadLetterStrategy;
import org.apache.activemq.broker.region.policy.PolicyEntry;
import org.apache.activemq.broker.region.policy.PolicyMap;
import org.apache.activemq.broker.region.policy.RedeliveryPolicyMap;
import org.apache.activemq.broker.util.RedeliveryPlugin;
import org.apache.activemq.command.ActiveMQDestination;
import org.apache.activemq.command.ConnectionInfo;
import org.apache.activemq.command.ConsumerInfo;

/**
 * An embedded ActiveMQ Classic broker for esmd's tests and demo (see servers.py).
 *
 * <p>Arguments: host, STOMP port, data folder, then users as {@code name:password}. AMQP 1.0
 * listens on the STOMP port + 1. Messages persist in KahaDB under the data folder, so a
 * restarted broker still has them. A STOMP NACK is a poison ack: the redelivery plugin puts
 * the message back on its queue (redelivered, its counter raised) after 1 s, up to
 * {@value #MAXIMUM_REDELIVERIES} times, then into the queue's own dead-letter queue
 * {@code DLQ.<queue>} (Amazon MQ's default is the shared {@code ActiveMQ.DLQ}; one per queue
 * keeps tests that share this broker apart). Queues named {@code forbidden.*} refuse
 * consumers, as a broker whose authorization map grants no read on them.
 */
public final class EsmdActiveMQBroker {

    static final int MAXIMUM_REDELIVERIES = 5;
    static final long REDELIVERY_DELAY_MS = 1000;  // the plugin's minimum
    static final String FORBIDDEN_PREFIX = "forbidden.";

    public static void main(String[] args) throws Exception {
        String host = args[0];
        int port = Integer.parseInt(args[1]);
        BrokerService broker = new BrokerService();
        broker.setBrokerName("esmd");
        broker.setDataDirectoryFile(new File(args[2]));
        broker.setPersistent(true);
        broker.setSchedulerSupport(true);  // the redelivery plugin's delays
        broker.setUseJmx(false);
        broker.setAdvisorySupport(false);
        broker.setUseShutdownHook(true);
        broker.setDestinationPolicy(policies());
        broker.setPlugins(new BrokerPlugin[] {authentication(args), redelivery()});
        broker.addConnector("stomp://" + host + ":" + port);
        broker.addConnector("amqp://" + host + ":" + (port + 1));
        broker.start();
        broker.waitUntilStarted();
        System.out.println("esmd activemq broker listening on " + host + ":" + port + " (STOMP)");
        broker.waitUntilStopped();
    }

    /**
     * User name and password checked on connect, as ActiveMQ's simpleAuthenticationPlugin does
     * (same refusal text); that plugin needs activemq-jaas, which Maven Central lacks for 6.2.
     */
    private static BrokerPlugin authentication(String[] args) {
        Map<String, String> users = new HashMap<>();
        for (int i = 3; i < args.length; i++) {
            String[] parts = args[i].split(":", 2);
            users.put(parts[0], parts[1]);
        }
        return next -> new PasswordCheck(next, users);
    }

    private static final class PasswordCheck extends BrokerFilter {
        private final Map<String, String> users;

        PasswordCheck(Broker next, Map<String, String> users) {
            super(next);
            this.users = users;
        }

        @Override
        public void addConnection(ConnectionContext context, ConnectionInfo info) throws Exception {
            String password = info.getUserName() == null ? null : users.get(info.getUserName());
            if (password == null || !password.equals(info.getPassword())) {
                throw new SecurityException("User name [" + info.getUserName() + "] or password is invalid.");
            }
            super.addConnection(context, info);
        }

        /**
         * Queues named {@code forbidden.*} refuse every consumer, as an authorization map
         * that grants no read on them would (same refusal text): tests check that esmd
         * reports it.
         */
        @Override
        public Subscription addConsumer(ConnectionContext context, ConsumerInfo info) throws Exception {
            ActiveMQDestination destination = info.getDestination();
            if (destination != null && destination.getPhysicalName().startsWith(FORBIDDEN_PREFIX)) {
                throw new SecurityException("User " + context.getUserName()
                    + " is not authorized to read from: " + destination);
            }
            return super.addConsumer(context, info);
        }
    }

    private static BrokerPlugin redelivery() {
        RedeliveryPolicy policy = new RedeliveryPolicy();
        policy.setMaximumRedeliveries(MAXIMUM_REDELIVERIES);
        policy.setInitialRedeliveryDelay(REDELIVERY_DELAY_MS);
        policy.setRedeliveryDelay(REDELIVERY_DELAY_MS);
        RedeliveryPolicyMap map = new RedeliveryPolicyMap();
        map.setDefaultEntry(policy);
        RedeliveryPlugin plugin = new RedeliveryPlugin();
        plugin.setRedeliveryPolicyMap(map);
        plugin.setSendToDlqIfMaxRetriesExceeded(true);
        return plugin;
    }

    private static PolicyMap policies() {
        IndividualDeadLetterStrategy deadLetters = new IndividualDeadLetterStrategy();
        deadLetters.setQueuePrefix("DLQ.");
        deadLetters.setUseQueueForQueueMessages(true);
        deadLetters.setProcessNonPersistent(true);
        PolicyEntry entry = new PolicyEntry();
        entry.setDeadLetterStrategy(deadLetters);
        PolicyMap map = new PolicyMap();
        map.setDefaultEntry(entry);
        return map;
    }
}
