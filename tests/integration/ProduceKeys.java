// The Java client's own partitioning, as the reference streamsync's producers must match.
//
// Keys are read from stdin, one per line, hex-encoded (byte-exact, whatever the key holds; an
// empty line is the empty key).
//
//   java -cp '<kafka lib dir>/*' ProduceKeys.java produce BOOTSTRAP TOPIC VALUE < keys.hex
//       sends every key with VALUE through a KafkaProducer left at its default partitioner,
//       then prints "<partition> <key hex>" per key as the broker acknowledged it
//   java -cp '<kafka lib dir>/*' ProduceKeys.java partitions N < keys.hex
//       prints "<partition> <key hex>" per key: the partition the producer's built-in
//       partitioner picks for it on a topic of N partitions, without a broker
//
// Any failure exits non-zero with the reason on stderr.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ProduceKeys {
    public static void main(String[] args) throws Exception {
        if (args.length == 4 && args[0].equals("produce")) {
            produce(args[1], args[2], args[3].getBytes(StandardCharsets.UTF_8), readKeys());
        } else if (args.length == 2 && args[0].equals("partitions")) {
            int partitions = Integer.parseInt(args[1]);
            for (byte[] key : readKeys()) {
                print(BuiltInPartitioner.partitionForKey(key, partitions), key);
            }
        } else {
            System.err.println("usage: ProduceKeys produce BOOTSTRAP TOPIC VALUE | partitions N  (hex keys on stdin)");
            System.exit(2);
        }
    }

    static List<byte[]> readKeys() throws Exception {
        List<byte[]> keys = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            keys.add(HexFormat.of().parseHex(line.strip()));
        }
        return keys;
    }

    static void produce(String bootstrap, String topic, byte[] value, List<byte[]> keys) throws Exception {
        Properties config = new Properties();
        config.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        config.put(ProducerConfig.ACKS_CONFIG, "all");
        config.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "30000");
        config.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        try (KafkaProducer<byte[], byte[]> producer =
                new KafkaProducer<>(config, new ByteArraySerializer(), new ByteArraySerializer())) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (byte[] key : keys) {
                sent.add(producer.send(new ProducerRecord<>(topic, key, value)));
            }
            for (int i = 0; i < keys.size(); i++) {
                print(sent.get(i).get().partition(), keys.get(i));
            }
        }
    }

    static void print(int partition, byte[] key) {
        System.out.println(partition + " " + HexFormat.of().formatHex(key));
    }
}
