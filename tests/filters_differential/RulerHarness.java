import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

import software.amazon.event.ruler.JsonRuleCompiler;
import software.amazon.event.ruler.Machine;
import software.amazon.event.ruler.MachineComplexityEvaluator;
import software.amazon.event.ruler.MatchType;
import software.amazon.event.ruler.Patterns;

/**
 * AWS's event-ruler behind a JSON-lines pipe, for esmd's differential filter test and benchmark.
 *
 * One JVM serves a whole run. Each input line is one request, each output line its answer:
 *
 *   {"pattern": "<json>", "events": ["<json>", ...]}
 *       -> {"matches": [true, false, ...]}, or {"error": "<why the pattern is refused>"};
 *          an event event-ruler cannot read answers null in its place. The pattern is
 *          compiled three times; should the answers differ (event-ruler's NameState reuse
 *          follows identity hash codes), the answer is {"unstable": [...]}, each one's.
 *   {"bench": {"pattern": "<json>", "events": ["<json>", ...], "seconds": 2.0}}
 *       -> {"decoded": <events/s on parsed events>, "raw": <events/s from JSON text>, "hits": n}
 *   {"complexity": "<json>", "cap": 100}
 *       -> {"complexity": n}: the sub-rules holding a wildcard or anything-but wildcard, added
 *          to one machine and evaluated by MachineComplexityEvaluator (capped at "cap"), as
 *          event-ruler's README shows a service limiting wildcard rules; or {"error": ...}
 *
 * Patterns are compiled with JsonRuleCompiler (the $or-aware compiler; Machine.addRule would
 * retry a refused pattern with the legacy RuleCompiler). To decide events, each sub-rule ($or
 * branch) gets a machine of its own, and an event matches when any does, as Lambda documents
 * $or. In one machine, a branch sharing its keys and a value with an earlier branch of the
 * same rule is taken for a duplicate and dropped (GenericMachine.addStep; docs/filters.md),
 * and which NameStates branches share can depend on identity hash codes, so that the same
 * pattern compiled twice may answer differently.
 */
public final class RulerHarness {
    private static final ObjectMapper MAPPER = new ObjectMapper();

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        PrintStream out = new PrintStream(System.out, false, "UTF-8");
        String line;
        while ((line = in.readLine()) != null) {
            JsonNode request = MAPPER.readTree(line);
            JsonNode answer;
            if (request.has("bench")) {
                answer = bench(request.get("bench"));
            } else if (request.has("complexity")) {
                answer = complexity(request);
            } else {
                answer = decide(request);
            }
            out.println(MAPPER.writeValueAsString(answer));
            out.flush();
        }
    }

    /** One machine per sub-rule ($or branch) of the pattern. */
    private static List<Machine> compileBranches(String pattern) throws Exception {
        List<Machine> machines = new ArrayList<>();
        for (Map<String, List<Patterns>> subRule : JsonRuleCompiler.compile(pattern)) {
            Machine machine = Machine.builder().build();
            machine.addPatternRule("r", subRule);
            machines.add(machine);
        }
        return machines;
    }

    /** One machine holding every sub-rule of the pattern, each under a name of its own. */
    private static Machine compile(String pattern) throws Exception {
        Machine machine = Machine.builder().build();
        int branch = 0;
        for (Map<String, List<Patterns>> subRule : JsonRuleCompiler.compile(pattern)) {
            machine.addPatternRule("r" + branch++, subRule);
        }
        return machine;
    }

    private static final int MACHINES = 3;

    private static JsonNode decide(JsonNode request) {
        ObjectNode answer = MAPPER.createObjectNode();
        List<ArrayNode> answers = new ArrayList<>();
        for (int i = 0; i < MACHINES; i++) {
            List<Machine> machines;
            try {
                machines = compileBranches(request.get("pattern").asText());
            } catch (Exception e) {
                answer.put("error", String.valueOf(e.getMessage()).replace('\n', ' '));
                return answer;
            }
            ArrayNode matches = MAPPER.createArrayNode();
            for (JsonNode event : request.get("events")) {
                try {
                    boolean matched = false;
                    for (Machine machine : machines) {
                        matched = matched || !machine.rulesForJSONEvent(event.asText()).isEmpty();
                    }
                    matches.add(matched);
                } catch (Exception e) {
                    matches.addNull();
                }
            }
            answers.add(matches);
        }
        for (ArrayNode other : answers) {
            if (!other.equals(answers.get(0))) {
                answer.putArray("unstable").addAll(answers);
                return answer;
            }
        }
        answer.set("matches", answers.get(0));
        return answer;
    }

    private static JsonNode complexity(JsonNode request) {
        ObjectNode answer = MAPPER.createObjectNode();
        try {
            Machine machine = Machine.builder().build();
            int branch = 0;
            for (Map<String, List<Patterns>> subRule : JsonRuleCompiler.compile(request.get("complexity").asText())) {
                if (hasWildcard(subRule)) {
                    machine.addPatternRule("r" + branch++, subRule);
                }
            }
            int cap = request.path("cap").asInt(100);
            answer.put("complexity", machine.evaluateComplexity(new MachineComplexityEvaluator(cap)));
        } catch (Exception e) {
            answer.put("error", String.valueOf(e.getMessage()).replace('\n', ' '));
        }
        return answer;
    }

    private static boolean hasWildcard(Map<String, List<Patterns>> subRule) {
        for (List<Patterns> patterns : subRule.values()) {
            for (Patterns pattern : patterns) {
                MatchType type = pattern.type();
                if (type == MatchType.WILDCARD || type == MatchType.ANYTHING_BUT_WILDCARD) {
                    return true;
                }
            }
        }
        return false;
    }

    private static JsonNode bench(JsonNode request) throws Exception {
        Machine machine = compile(request.get("pattern").asText());
        List<String> texts = new ArrayList<>();
        List<JsonNode> trees = new ArrayList<>();
        for (JsonNode event : request.get("events")) {
            texts.add(event.asText());
            trees.add(MAPPER.readTree(event.asText()));
        }
        double seconds = request.path("seconds").asDouble(2.0);
        ObjectNode answer = MAPPER.createObjectNode();
        answer.put("hits", countTrees(machine, trees));
        answer.put("decoded", rate(seconds, trees.size(), () -> countTrees(machine, trees)));
        answer.put("raw", rate(seconds, texts.size(), () -> countTexts(machine, texts)));
        return answer;
    }

    private interface Round {
        int run() throws Exception;
    }

    /** The best events/s over rounds run for about `seconds`, after as long again of warm-up. */
    private static double rate(double seconds, int size, Round round) throws Exception {
        long warmUntil = System.nanoTime() + (long) (seconds * 1e9);
        while (System.nanoTime() < warmUntil) {
            round.run();
        }
        double best = 0;
        long until = System.nanoTime() + (long) (seconds * 1e9);
        do {
            long started = System.nanoTime();
            round.run();
            best = Math.max(best, size / ((System.nanoTime() - started) / 1e9));
        } while (System.nanoTime() < until);
        return best;
    }

    private static int countTrees(Machine machine, List<JsonNode> trees) {
        int hits = 0;
        for (JsonNode tree : trees) {
            hits += machine.rulesForJSONEvent(tree).isEmpty() ? 0 : 1;
        }
        return hits;
    }

    private static int countTexts(Machine machine, List<String> texts) throws Exception {
        int hits = 0;
        for (String text : texts) {
            hits += machine.rulesForJSONEvent(text).isEmpty() ? 0 : 1;
        }
        return hits;
    }
}
